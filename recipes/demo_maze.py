"""Maze demo: retrofit a small pretrained LLaDA-architecture MDM into a FlexMDM and measure what it buys.

    python recipes/demo_maze.py                # make demo: retrofit, train the baseline, evaluate, report
    python recipes/demo_maze.py --quick        # a few steps and mazes: the pipeline end to end (tests)
    python recipes/demo_maze.py pretrain       # make demo-pretrain: re-create the shipped maze MDM

The comparison (``run``), top to bottom:

1. write the maze splits (fixed seeds, ``recipes/configs/demo/maze.yaml``) to ``<work>/data``;
2. retrofit the shipped MDM (``src/flexretrofit/assets/maze_mdm``) into a FlexMDM with the 8B retrofit's
   code: ``recipes/instruct.py`` with ``retrofit_flexmdm.yaml`` (``FlexMDMForMaskedDiffusion.from_llada``,
   prompt protected, answer = the moves, no EOS);
3. train the same MDM for the same budget with its own objective (``continue_mdm.yaml``): the baseline;
4. generate an answer for every test maze with each model (``generate_flex`` / LLaDA's ``generate_mdm``),
   check it exactly (``data.maze.check_answer``) and append one JSONL row per maze as it finishes, so an
   interrupted demo continues where it stopped;
5. summarise from those rows: success per difficulty with 95% Wilson intervals, the total-variation
   distance between generated and true answer lengths, tokens per second; write ``summary.json``,
   ``report.md`` and ``report.png``.

Training runs resume from their last checkpoint and are skipped once exported; a work folder remembers the
settings it was made with and refuses different ones (delete it or pass ``--work-dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import runpy
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from flexretrofit.data import PromptCompletionFormat
from flexretrofit.data.maze import (
    MazeDifficulty,
    MazeInstance,
    build_splits,
    check_answer,
    parse_moves,
    read_jsonl,
    render,
    save_splits,
)
from flexretrofit.evaluation import (
    ResultsWriter,
    total_variation_distance,
    wilson_interval,
    write_summary,
)
from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM, load_tokenizer
from flexretrofit.sampling import generate_flex, generate_mdm
from flexretrofit.testing import build_tiny_tokenizer, tiny_llada_config
from flexretrofit.training import load_config, read_log

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "demo" / "maze.yaml"
TASK_FILE = "maze_task.json"  # beside the shipped MDM: the task and the pretraining it was made with
MODELS = ("mdm", "flexmdm")
LABELS = {"mdm": "MDM (LLaDA sampler)", "flexmdm": "FlexMDM (retrofit)"}
PAPER = {"mdm": (68.4, 29.3, 24.2), "flexmdm": (92.3, 90.4, 90.0)}  # easy / medium / hard, %


def shipped_mdm_path() -> Path:
    """The maze MDM shipped in the package (``flexretrofit/assets/maze_mdm``)."""
    return Path(str(resources.files("flexretrofit") / "assets" / "maze_mdm"))


# ---------------------------------------------------------------------------------------------
# Settings (recipes/configs/demo/maze.yaml)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskSettings:
    difficulties: dict[str, dict[str, int]]
    difficulty_mix: dict[str, float] | None = None
    seed: int = 0
    num_train: int = 12000
    num_validation: int = 300
    num_test: int = 600

    def specs(self) -> dict[str, MazeDifficulty]:
        return {name: MazeDifficulty(name, **fields) for name, fields in self.difficulties.items()}


@dataclasses.dataclass
class PretrainSettings:
    config: str
    backbone: dict[str, int]
    seed: int = 0
    output_dir: str = "src/flexretrofit/assets/maze_mdm"


@dataclasses.dataclass
class CompareSettings:
    flexmdm_config: str
    mdm_config: str
    mdm_checkpoint: str | None = None


@dataclasses.dataclass
class EvalSettings:
    num_test_per_difficulty: int = 100
    split: str = "test"  # "validation" to choose settings without looking at the test mazes
    batch_size: int = 50
    flex: dict[str, Any] = dataclasses.field(default_factory=dict)
    mdm: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_samples_shown: int = 4


@dataclasses.dataclass
class QuickSettings:
    train_steps: int = 2
    num_train: int = 256
    num_test_per_difficulty: int = 3
    flex_steps: int = 6


@dataclasses.dataclass
class DemoSettings:
    task: TaskSettings
    pretrain: PretrainSettings
    compare: CompareSettings
    evaluation: EvalSettings
    quick: QuickSettings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_settings(path: str | os.PathLike = DEFAULT_CONFIG) -> DemoSettings:
    """Read the demo settings; unknown keys raise ValueError naming the allowed ones."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo config {path} does not exist; pass --config recipes/configs/demo/maze.yaml"
        )
    values = yaml.safe_load(path.read_text()) or {}
    sections = {field.name: field.type for field in dataclasses.fields(DemoSettings)}
    kinds = {
        "task": TaskSettings,
        "pretrain": PretrainSettings,
        "compare": CompareSettings,
        "evaluation": EvalSettings,
        "quick": QuickSettings,
    }
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; allowed: {', '.join(sections)}.")
    built = {}
    for name, cls in kinds.items():
        section = values.get(name) or {}
        allowed = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(section) - allowed)
        if extra:
            raise ValueError(
                f"{path}: unknown key(s) {extra} in {name}; allowed: {', '.join(sorted(allowed))}."
            )
        built[name] = cls(**section)
    return DemoSettings(**built)


def repo_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository root (not the current directory)."""
    path = Path(path)
    return path if path.is_absolute() else REPO / path


# ---------------------------------------------------------------------------------------------
# Task data
# ---------------------------------------------------------------------------------------------


def build_task_splits(task: TaskSettings) -> dict[str, list[MazeInstance]]:
    """The train / validation / test mazes, reproducible from ``task.seed`` (test drawn first, disjoint)."""
    return build_splits(
        task.num_train,
        task.num_validation,
        task.num_test,
        seed=task.seed,
        difficulty_mix=task.difficulty_mix,
        difficulties=task.specs(),
    )


def evaluation_subset(
    test: Sequence[MazeInstance], names: Sequence[str], per_difficulty: int
) -> list[MazeInstance]:
    """The first ``per_difficulty`` test mazes of each difficulty, grouped by difficulty."""
    chosen = []
    for name in names:
        of_name = [instance for instance in test if instance.difficulty == name]
        if len(of_name) < per_difficulty:
            raise ValueError(
                f"the test split has {len(of_name)} {name} mazes, fewer than num_test_per_difficulty="
                f"{per_difficulty}; raise task.num_test or lower the number."
            )
        chosen.extend(of_name[:per_difficulty])
    return chosen


def canvas_length(tokenizer, task: TaskSettings) -> int:
    """Longest prompt + longest answer + one EOS: the smallest MDM canvas that holds every task instance."""
    prompt_format = PromptCompletionFormat(tokenizer, completion_field="answer")
    longest = 0
    for spec in task.specs().values():
        walls = " ".join(["f"] * (spec.height * spec.width))
        prompt = f"maze {spec.height}x{spec.width} walls: {walls} start 0,0 goal 0,0 path:"
        longest = max(longest, len(prompt_format.prompt_ids(prompt)) + spec.max_moves + 1)
    return longest


# ---------------------------------------------------------------------------------------------
# Training (recipes/instruct.py: the same recipe code as the 8B runs)
# ---------------------------------------------------------------------------------------------


def train_with_recipe(config_path: Path, overrides: list[str], label: str) -> dict[str, Any]:
    """Run ``recipes/instruct.py`` unless its export already exists; return what it did (from its log).

    Interrupted runs resume from their newest checkpoint (``train.resume_from: latest``). An export made
    with another config is refused rather than silently reused.
    """
    config = load_config(config_path, overrides)
    output_dir = Path(config.train.output_dir)
    final = output_dir / "final"
    info_path = output_dir / "run_info.json"
    wanted = json.loads(json.dumps(config.to_dict()))
    if (final / "config.json").is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["config"] != wanted:
            raise ValueError(
                f"{output_dir} holds a {label} run made with another config; delete {output_dir} (or use another "
                "--work-dir) to train again."
            )
        print(f"[{label}] already trained: {final}", flush=True)
        return info
    print(f"[{label}] training {config.train.max_steps} steps -> {final}", flush=True)
    started = time.perf_counter()
    main = runpy.run_path(str(REPO / "recipes" / "instruct.py"))["main"]
    main(["--config", str(config_path), *overrides])
    seconds = time.perf_counter() - started
    train_log = read_log(output_dir / "log.jsonl", "train")
    eval_log = read_log(output_dir / "log.jsonl", "eval")
    info = {
        "label": label,
        "config": wanted,
        "final": str(final),
        "steps": config.train.max_steps,
        "global_batch_size": config.train.global_batch_size,
        # a resumed run counts only the time of its last part
        "wall_seconds": round(seconds, 1),
        "final_train_loss": train_log[-1]["loss"] if train_log else None,
        "final_eval_loss": eval_log[-1]["eval_loss"] if eval_log else None,
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


def _path_overrides(init_from: Path, data_dir: Path, output_dir: Path) -> list[str]:
    return [
        f"model.init_from={json.dumps(str(init_from))}",
        f"data.sources={json.dumps([{'path': str(data_dir / 'train.jsonl')}])}",
        f"data.eval_sources={json.dumps([{'path': str(data_dir / 'validation.jsonl')}])}",
        f"train.output_dir={json.dumps(str(output_dir))}",
    ]


# ---------------------------------------------------------------------------------------------
# Generation and scoring
# ---------------------------------------------------------------------------------------------

Solver = Callable[[list[MazeInstance]], list[list[int]]]


def row_seed(instance: MazeInstance) -> int:
    """A sampler seed from the maze content: the same maze gets the same draws in any batch or run."""
    return int(instance.canonical_hash[:15], 16)


def flex_solver(model: FlexMDMForMaskedDiffusion, tokenizer, cap: int, options: dict[str, Any]) -> Solver:
    """Answers of model-chosen length: ``generate_flex`` from the prompt alone, at most ``cap`` tokens in all."""
    prompt_format = PromptCompletionFormat(tokenizer, completion_field="answer")

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        prompts = [prompt_format.prompt_ids(instance.to_dict()["prompt"]) for instance in instances]
        seeds = [row_seed(instance) for instance in instances]
        output = generate_flex(model, prompts, max_length=cap, row_seeds=seeds, **options)
        return output.generated_ids()

    return solve


def mdm_solver(model: LLaDAModelLM, tokenizer, canvas: int, options: dict[str, Any]) -> Solver:
    """LLaDA's sampler on the training canvas: ``canvas - prompt`` MASKs, cut at the first EOS."""
    prompt_format = PromptCompletionFormat(tokenizer, completion_field="answer")

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        prompts = [prompt_format.prompt_ids(instance.to_dict()["prompt"]) for instance in instances]
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("an MDM batch needs prompts of one length (one grid size); batch by difficulty.")
        gen_length = canvas - len(prompts[0])
        output = generate_mdm(
            model,
            prompts,
            gen_length=gen_length,
            block_length=gen_length,
            steps=gen_length,
            suppress_tokens=[],  # EOS is how the MDM ends its answer; the sampler cuts there
            **options,
        )
        return output.generated_ids()

    return solve


def score_row(instance: MazeInstance, token_ids: list[int], tokenizer) -> dict[str, Any]:
    """One result row. Special tokens stay in the text, so a stray one makes the answer invalid."""
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    verdict = check_answer(instance, text)
    return {
        "id": instance.id,
        "difficulty": instance.difficulty,
        "reference_moves": instance.num_moves,
        "generated_text": text,
        "generated_token_ids": list(token_ids),
        "generated_tokens": len(token_ids),
        "valid": verdict.valid,
        "reason": verdict.reason,
    }


def evaluate(
    solve: Solver,
    instances: Sequence[MazeInstance],
    tokenizer,
    results_path: Path,
    batch_size: int,
    label: str,
) -> list[dict[str, Any]]:
    """Answer every maze not yet in ``results_path`` (batches of one difficulty), one row per maze as it
    finishes; returns the rows of ``instances`` in their order."""
    with ResultsWriter(results_path) as writer:
        pending = [instance for instance in instances if instance.id not in writer]
        if len(pending) < len(instances):
            print(
                f"[{label}] {len(instances) - len(pending)} mazes already answered in {results_path}",
                flush=True,
            )
        by_difficulty: dict[str, list[MazeInstance]] = {}
        for instance in pending:
            by_difficulty.setdefault(instance.difficulty, []).append(instance)
        for name, group in by_difficulty.items():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                began = time.perf_counter()
                answers = solve(batch)
                seconds = time.perf_counter() - began
                for instance, token_ids in zip(batch, answers):
                    row = score_row(instance, token_ids, tokenizer)
                    row.update(model=label, seconds=seconds / len(batch), batch_size=len(batch))
                    writer.write(row)
                done = sum(r["difficulty"] == name for r in writer.rows)
                print(
                    f"[{label}] {name}: {done} mazes answered ({seconds:.1f} s for {len(batch)})", flush=True
                )
        by_id = {row["id"]: row for row in writer.rows}
    return [by_id[instance.id] for instance in instances]


# ---------------------------------------------------------------------------------------------
# Summary (computed from the result rows only)
# ---------------------------------------------------------------------------------------------


def summarize_rows(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per difficulty (and ``all``): success with a 95% Wilson interval, the length TV distance between the
    generated and the true answer lengths (in tokens = moves), how often the length is exactly right, the
    failure reasons; plus generation speed."""
    summary: dict[str, Any] = {}
    for name in [*names, "all"]:
        group = [row for row in rows if name == "all" or row["difficulty"] == name]
        if not group:
            continue
        successes = sum(bool(row["valid"]) for row in group)
        low, high = wilson_interval(successes, len(group))
        generated = [row["generated_tokens"] for row in group]
        reference = [row["reference_moves"] for row in group]
        summary[name] = {
            "n": len(group),
            "successes": successes,
            "success": successes / len(group),
            "ci95": [low, high],
            "length_tv": total_variation_distance(generated, reference),
            "length_exact": sum(g == r for g, r in zip(generated, reference)) / len(group),
            "mean_generated_length": sum(generated) / len(group),
            "mean_reference_length": sum(reference) / len(group),
            "failures": dict(Counter(row["reason"] for row in group if not row["valid"])),
        }
    seconds = sum(row["seconds"] for row in rows)
    tokens = sum(row["generated_tokens"] for row in rows)
    summary["speed"] = {
        "generated_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "mazes_per_second": len(rows) / seconds if seconds > 0 else None,
    }
    return summary


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def plot_report(
    results: dict[str, dict[str, Any]],
    rows: dict[str, list[dict[str, Any]]],
    names: Sequence[str],
    path: Path,
) -> Path:
    """One PNG: generated vs true answer length per difficulty (top), success with 95% intervals (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(names), 7), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(names))
    colors = {"reference": "tab:gray", "mdm": "tab:orange", "flexmdm": "tab:blue"}
    for column, name in enumerate(names):
        axes = figure.add_subplot(grid[0, column])
        reference = [r["reference_moves"] for r in rows["flexmdm"] if r["difficulty"] == name]
        top = max(
            [*reference, *(r["generated_tokens"] for m in MODELS for r in rows[m] if r["difficulty"] == name)]
        )
        edges = [x - 0.5 for x in range(top + 2)]
        series = [("reference", "true length", reference)] + [
            (
                m,
                f"{m} (TV {results[m][name]['length_tv']:.2f})",
                [r["generated_tokens"] for r in rows[m] if r["difficulty"] == name],
            )
            for m in MODELS
        ]
        for key, label, values in series:
            counts = [0] * (top + 1)
            for value in values:
                counts[value] += 1
            axes.stairs(
                [c / len(values) for c in counts], edges, label=label, color=colors[key], linewidth=1.6
            )
        axes.set_title(f"{name}: answer length")
        axes.set_xlabel("moves (tokens)")
        axes.set_ylabel("fraction of mazes")
        axes.legend(fontsize=8)
    axes = figure.add_subplot(grid[1, :])
    width = 0.38
    for offset, model in zip((-width / 2, width / 2), MODELS):
        stats = [results[model][name] for name in names]
        heights = [100 * s["success"] for s in stats]
        errors = [
            [100 * (s["success"] - s["ci95"][0]) for s in stats],
            [100 * (s["ci95"][1] - s["success"]) for s in stats],
        ]
        positions = [i + offset for i in range(len(names))]
        axes.bar(positions, heights, width, yerr=errors, capsize=4, label=LABELS[model], color=colors[model])
    axes.set_xticks(range(len(names)), list(names))
    axes.set_ylim(0, 100)
    axes.set_ylabel("success % (95% Wilson interval)")
    axes.set_title("maze success by difficulty")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def results_table(results: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    lines = [
        "| difficulty | n | MDM success [95% CI] | FlexMDM success [95% CI] | MDM length TV | FlexMDM length TV "
        "| MDM exact length | FlexMDM exact length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [*names, "all"]:
        mdm, flex = results["mdm"][name], results["flexmdm"][name]
        lines.append(
            f"| {name} | {flex['n']} "
            f"| {_pct(mdm['success'])} [{_pct(mdm['ci95'][0])}, {_pct(mdm['ci95'][1])}] "
            f"| {_pct(flex['success'])} [{_pct(flex['ci95'][0])}, {_pct(flex['ci95'][1])}] "
            f"| {mdm['length_tv']:.3f} | {flex['length_tv']:.3f} "
            f"| {_pct(mdm['length_exact'])} | {_pct(flex['length_exact'])} |"
        )
    return "\n".join(lines)


def sample_lines(
    instances: Sequence[MazeInstance], rows: dict[str, list[dict[str, Any]]], count: int
) -> list[str]:
    """A few test mazes (spread over the difficulties) with both models' answers."""
    if count <= 0:
        return []
    step = max(1, len(instances) // count)
    lines = []
    for index in range(0, len(instances), step)[:count]:
        instance = instances[index]
        lines.append(f"- {instance.difficulty} `{instance.to_dict()['prompt']}`")
        lines.append(f"  - true path ({instance.num_moves} moves): `{instance.to_dict()['answer'].strip()}`")
        for model in ("flexmdm", "mdm"):
            row = rows[model][index]
            verdict = "ok" if row["valid"] else row["reason"]
            lines.append(
                f"  - {model} ({row['generated_tokens']} tokens, {verdict}): `{row['generated_text'].strip() or '(empty)'}`"
            )
    return lines


def rendered_example(instances: Sequence[MazeInstance], rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """A drawing of one maze with the FlexMDM's path: its first solved hard-most maze, else the first maze."""
    order = sorted(range(len(instances)), key=lambda i: (not rows[i]["valid"], -instances[i].num_moves))
    index = order[0]
    try:
        moves = parse_moves(rows[index]["generated_text"])
    except ValueError:
        moves = ()
    caption = (
        f"{instances[index].difficulty} maze `{instances[index].id}`, FlexMDM answer "
        f"`{rows[index]['generated_text'].strip() or '(empty)'}` ({'solved' if rows[index]['valid'] else rows[index]['reason']}); "
        "S start, G goal, * cells the answer visits (until an illegal move)"
    )
    return caption, render(instances[index], moves)


def write_report(
    path: Path,
    summary: dict[str, Any],
    instances: Sequence[MazeInstance],
    rows: dict[str, list[dict[str, Any]]],
    files: dict[str, Path],
    settings: DemoSettings,
) -> Path:
    names = summary["difficulties"]
    results = summary["results"]
    training = summary["training"]
    caption, picture = rendered_example(instances, rows["flexmdm"])
    paper = " / ".join(
        f"{name} {PAPER['mdm'][i]}% vs {PAPER['flexmdm'][i]}%"
        for i, name in enumerate(("easy", "medium", "hard"))
    )
    speed = {model: results[model]["speed"] for model in MODELS}
    lines = [
        "# FlexMDM vs MDM on maze planning",
        "",
        f"A {summary['mdm_checkpoint']['parameters'] / 1e6:.2f}M-parameter LLaDA-architecture MDM, pretrained on mazes "
        f"(`{summary['mdm_checkpoint']['path']}`), retrofitted into a FlexMDM with `from_llada` + `recipes/instruct.py`, "
        "against the same MDM trained for the same budget. "
        + (
            "**Quick run (a few steps): the numbers say nothing about the method.**"
            if summary["quick"]
            else ""
        ),
        "",
        "## Results",
        "",
        f"Mazes: the first {summary['num_test_per_difficulty']} of each difficulty of the {summary['split']} split "
        f"(seed {settings.task.seed}, disjoint from all training data). Success = legal moves that reach the goal by "
        "the shortest path (`data.maze.check_answer`). Length TV = total-variation distance between the generated "
        "and the true answer lengths (tokens; one token per move); exact length = share of answers of the true length.",
        "",
        results_table(results, names),
        "",
        f"Paper (trained from scratch, larger mazes): {paper} (MDM vs FlexMDM success).",
        "",
        "Difficulties: "
        + ", ".join(
            f"{name} = {spec['height']}x{spec['width']} grid, {spec['min_moves']}-{spec['max_moves']} moves"
            for name, spec in settings.task.difficulties.items()
        )
        + ".",
        "",
        "## Speed and budget",
        "",
        "| model | training | generation | tokens/s | mazes/s |",
        "|---|---|---|---|---|",
    ]
    for model in MODELS:
        info = training[model]
        generation = (
            f"generate_flex, {summary['sampling']['flexmdm']['steps']} steps"
            if model == "flexmdm"
            else "generate_mdm, canvas - prompt MASKs, 1 token/step"
        )
        lines.append(
            f"| {model} | {info['steps']} steps x {info['global_batch_size']} mazes, {info['wall_seconds']} s, "
            f"final loss {info['final_train_loss']:.3f} | {generation} | {speed[model]['tokens_per_second']:.0f} "
            f"| {speed[model]['mazes_per_second']:.1f} |"
        )
    lines += [
        "",
        f"CPU: {summary['machine']['cpu_count']} cores, {summary['machine']['torch_threads']} torch threads. "
        "Tokens/s counts generated answer tokens (MDM: up to its first EOS).",
        "",
        "## Samples",
        "",
        *sample_lines(instances, rows, settings.evaluation.num_samples_shown),
        "",
        caption,
        "",
        "```",
        picture,
        "```",
        "",
        "## Files",
        "",
        *(f"- {name}: `{file}`" for name, file in files.items()),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _check_work_dir(work_dir: Path, settings: dict[str, Any]) -> None:
    """A work folder holds one run's settings; refuse to mix results of different settings."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "settings.json"
    wanted = json.loads(json.dumps(settings))
    if path.is_file():
        if json.loads(path.read_text()) != wanted:
            raise ValueError(
                f"{work_dir} holds a demo run made with other settings; delete it or pass --work-dir to start anew."
            )
    else:
        path.write_text(json.dumps(wanted, indent=2))


def read_task_file(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no {TASK_FILE}: it is not a maze MDM made by `python recipes/demo_maze.py pretrain` "
            "(make demo-pretrain). Pass such a folder, or null for the shipped one."
        )
    return json.loads(path.read_text())


def run_comparison(settings: DemoSettings, work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Retrofit, train the baseline, evaluate both, report. Returns the summary (also in summary.json)."""
    started = time.perf_counter()
    evaluation = settings.evaluation
    checkpoint = (
        repo_path(settings.compare.mdm_checkpoint) if settings.compare.mdm_checkpoint else shipped_mdm_path()
    )
    task_record = read_task_file(checkpoint)
    if task_record["task"] != json.loads(json.dumps(dataclasses.asdict(settings.task))):
        raise ValueError(
            f"the MDM in {checkpoint} was pretrained on other mazes ({task_record['task']}) than task in the demo "
            "config; use the same task settings, or re-create the MDM with `make demo-pretrain`."
        )
    steps_override: list[str] = []
    per_difficulty = evaluation.num_test_per_difficulty
    flex_options = dict(evaluation.flex)
    if quick:
        steps_override = [
            f"train.max_steps={settings.quick.train_steps}",
            "train.save_every=null",
            "eval.num_samples=8",
        ]
        per_difficulty = settings.quick.num_test_per_difficulty
        flex_options["steps"] = settings.quick.flex_steps
    configs = {
        "flexmdm": repo_path(settings.compare.flexmdm_config),
        "mdm": repo_path(settings.compare.mdm_config),
    }
    loaded = {model: load_config(path, steps_override) for model, path in configs.items()}
    for model, config in loaded.items():
        if config.model.kind != model:
            raise ValueError(
                f"{configs[model]} trains model.kind={config.model.kind!r}; the {model} run needs {model!r}."
            )
    budget = {
        model: (c.train.max_steps, c.train.global_batch_size, c.optim.lr) for model, c in loaded.items()
    }
    if budget["flexmdm"] != budget["mdm"]:
        raise ValueError(
            f"the FlexMDM and MDM runs must get the same budget (steps, batch, lr); got {budget}. Align "
            f"{configs['flexmdm']} and {configs['mdm']}."
        )
    if loaded["mdm"].data.canvas_length != task_record["canvas_length"]:
        raise ValueError(
            f"{configs['mdm']} sets data.canvas_length={loaded['mdm'].data.canvas_length}, but the MDM was pretrained "
            f"on a {task_record['canvas_length']}-token canvas; use that."
        )
    canvas = task_record["canvas_length"]

    _check_work_dir(work_dir, {"settings": settings.to_dict(), "quick": quick, "checkpoint": str(checkpoint)})

    task = dataclasses.replace(settings.task, num_train=settings.quick.num_train) if quick else settings.task
    splits = build_task_splits(task)
    data_dir = work_dir / "data"
    split_files = save_splits(splits, data_dir)
    names = list(settings.task.difficulties)
    if evaluation.split not in split_files:
        raise ValueError(f"evaluation.split={evaluation.split!r} is not one of {sorted(split_files)}.")
    instances = evaluation_subset(read_jsonl(split_files[evaluation.split]), names, per_difficulty)
    print(f"maze splits in {data_dir}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()), flush=True)

    training = {}
    for model in ("flexmdm", "mdm"):
        overrides = _path_overrides(checkpoint, data_dir, work_dir / model) + steps_override
        training[model] = train_with_recipe(configs[model], overrides, model)

    tokenizer = load_tokenizer(training["flexmdm"]["final"])
    flex_model = FlexMDMForMaskedDiffusion.from_pretrained(training["flexmdm"]["final"]).eval()
    mdm_model = LLaDAModelLM.from_pretrained(training["mdm"]["final"]).eval()
    solvers = {
        # The same cap for both: FlexMDM's answers may not grow past the MDM's canvas.
        "flexmdm": flex_solver(flex_model, tokenizer, canvas, flex_options),
        "mdm": mdm_solver(mdm_model, tokenizer, canvas, dict(evaluation.mdm)),
    }
    rows = {}
    files: dict[str, Path] = {"maze splits": data_dir}
    for model in MODELS:
        path = work_dir / f"results_{model}.jsonl"
        rows[model] = evaluate(solvers[model], instances, tokenizer, path, evaluation.batch_size, model)
        files[f"{model} answers (one JSON row per maze)"] = path
    results = {model: summarize_rows(rows[model], names) for model in MODELS}

    summary = {
        "quick": quick,
        "difficulties": names,
        "split": evaluation.split,
        "num_test_per_difficulty": per_difficulty,
        "results": results,
        "training": training,
        "sampling": {
            "flexmdm": {**flex_options, "max_length": canvas},
            "mdm": {**evaluation.mdm, "canvas_length": canvas},
        },
        "mdm_checkpoint": {
            "path": str(checkpoint),
            "parameters": sum(p.numel() for p in mdm_model.parameters()),
            "pretraining": task_record.get("pretraining"),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "wall_seconds_this_invocation": None,
    }
    files["summary"] = work_dir / "summary.json"
    files["plot"] = plot_report(results, rows, names, work_dir / "report.png")
    files["report"] = work_dir / "report.md"
    summary["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    write_summary(files["summary"], summary)
    write_report(files["report"], summary, instances, rows, {k: v for k, v in files.items()}, settings)

    print("\n" + results_table(results, names) + "\n")
    print("\n".join(sample_lines(instances, rows, settings.evaluation.num_samples_shown)))
    caption, picture = rendered_example(instances, rows["flexmdm"])
    print(f"\n{caption}\n{picture}\n")
    for name, file in files.items():
        print(f"{name}: {file}")
    return summary


def run_pretraining(settings: DemoSettings, work_dir: Path, output_dir: Path, quick: bool = False) -> Path:
    """Train the maze MDM from a random tiny LLaDA and write it (with its task record) to ``output_dir``."""
    pretrain = settings.pretrain
    tokenizer = build_tiny_tokenizer()
    init = work_dir / "llada_init"
    if not (init / "config.json").is_file():
        torch.manual_seed(pretrain.seed)
        LLaDAModelLM(tiny_llada_config(tokenizer, **pretrain.backbone)).save_pretrained(init)
        tokenizer.save_pretrained(init)
    task = dataclasses.replace(settings.task, num_train=settings.quick.num_train) if quick else settings.task
    data_dir = work_dir / "data"
    save_splits(build_task_splits(task), data_dir)
    config_path = repo_path(pretrain.config)
    overrides = _path_overrides(init, data_dir, work_dir / "mdm")
    if quick:
        overrides += [
            f"train.max_steps={settings.quick.train_steps}",
            "train.save_every=null",
            "eval.num_samples=8",
        ]
    config = load_config(config_path, overrides)
    canvas = canvas_length(tokenizer, settings.task)
    if config.data.canvas_length != canvas:
        raise ValueError(
            f"{config_path} sets data.canvas_length={config.data.canvas_length}; these mazes need exactly {canvas} "
            "(longest prompt + longest answer + one EOS). Set it to that."
        )
    info = train_with_recipe(config_path, overrides, "pretrain")

    output_dir.mkdir(parents=True, exist_ok=True)
    for file in Path(info["final"]).iterdir():
        if file.is_file():
            shutil.copyfile(file, output_dir / file.name)
    record = {
        "task": json.loads(json.dumps(dataclasses.asdict(settings.task))),
        "canvas_length": canvas,
        "format": "flexretrofit.data.maze prompt/answer text, PromptCompletionFormat, EOS-padded canvas",
        "pretraining": {
            "recipe": "recipes/instruct.py --config " + str(pretrain.config),
            "backbone": pretrain.backbone,
            "init_seed": pretrain.seed,
            "steps": info["steps"],
            "global_batch_size": info["global_batch_size"],
            "wall_seconds": info["wall_seconds"],
            "final_train_loss": info["final_train_loss"],
            "final_eval_loss": info["final_eval_loss"],
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        },
    }
    (output_dir / TASK_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(f"maze MDM written to {output_dir}")
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "pretrain"))
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo settings (YAML)")
    parser.add_argument(
        "--work-dir", default=None, help="where data, runs and results go (default runs/demo_maze*)"
    )
    parser.add_argument("--quick", action="store_true", help="a few training steps and test mazes (tests)")
    parser.add_argument(
        "--output-dir", default=None, help="pretrain: where the MDM goes (default: the shipped asset)"
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    suffix = "_quick" if args.quick else ""
    if args.command == "pretrain":
        work_dir = Path(args.work_dir or f"runs/demo_pretrain{suffix}")
        output_dir = Path(args.output_dir) if args.output_dir else repo_path(settings.pretrain.output_dir)
        run_pretraining(settings, work_dir, output_dir, quick=args.quick)
    else:
        run_comparison(settings, Path(args.work_dir or f"runs/demo_maze{suffix}"), quick=args.quick)


if __name__ == "__main__":
    main()
