"""The maze demo's pipeline: retrofit a small pretrained LLaDA-architecture MDM into a FlexMDM and measure
what it buys (``recipes/demo_maze.py`` is its command line; ``make demo`` / ``make demo-pretrain``).

It is the whole run, not one step: maze data (:mod:`.instances`), training through the recipe code,
evaluation (:mod:`.evaluation`) and the report (:mod:`.report`). It adds the settings and the order of the
steps.

The comparison (:func:`run_comparison`), top to bottom:

1. write the maze splits (fixed seeds, ``recipes/configs/demo/maze.yaml``) to ``<work>/data``
   (:func:`write_task_data`);
2. retrofit the shipped MDM (``src/flexretrofit/assets/maze_mdm``) into a FlexMDM with the 8B retrofit's
   code: ``recipes/instruct.py`` with ``retrofit_flexmdm.yaml`` (``FlexMDMForMaskedDiffusion.from_llada``;
   prompt and anchors protected, no EOS);
3. the MDM baseline: the shipped MDM as pretrained (``compare.mdm_config: null``), or trained on for the
   retrofit's budget with its own objective (a config such as ``continue_mdm.yaml``);
4. answer every test maze with the FlexMDM and with each MDM arm (:func:`mdm_arms`: with and without the
   subgoals in the prompt), check it exactly and append one JSONL row per maze as it finishes, so an
   interrupted demo continues where it stopped;
5. summarise from those rows (the better MDM arm is ``mdm``) and write ``summary.json``, ``report.md`` and
   ``report.png``.

:func:`run_pretraining` re-creates the shipped MDM from a random tiny LLaDA.

Training goes through the recipe code: the caller passes ``recipes/instruct.py``'s ``main`` as ``train``,
so the library never imports from ``recipes/``. Training runs resume from their last checkpoint and are
skipped once exported; a work folder remembers its settings and refuses different ones.

Settings, and the paths in them, are :mod:`.settings`'.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from flexretrofit.data import PromptCompletionFormat
from flexretrofit.evaluation.results import write_summary
from flexretrofit.maze.evaluation import evaluate, evaluation_subset, summarize_rows
from flexretrofit.maze.instances import MazeInstance, build_splits, read_jsonl, save_splits
from flexretrofit.maze.methods import MAZE_METHODS, TWO_PROMPT_SUFFIX, data_suffix, load_model, solver
from flexretrofit.maze.report import (
    plot_report,
    rendered_example,
    results_table,
    sample_lines,
    write_report,
)
from flexretrofit.maze.settings import (
    REPO_ROOT,
    DemoSettings,
    TaskSettings,
    quick_overrides,
    quick_task,
    repo_path,
    with_current_keys,
)
from flexretrofit.models import LLaDAConfig, LLaDAModelLM, load_tokenizer
from flexretrofit.training import load_config, read_log
from flexretrofit.training.validation import check_creatable_dir

TASK_FILE = "maze_task.json"  # beside the shipped MDM: the task and the pretraining it was made with

Train = Callable[[list[str]], None]
"""The training recipe's entry point: ``train(["--config", path, *overrides])`` (recipes/instruct.py main)."""


def shipped_mdm_path() -> Path:
    """The maze MDM shipped in the package (``flexretrofit/assets/maze_mdm``)."""
    return Path(str(resources.files("flexretrofit") / "assets" / "maze_mdm"))


# ---------------------------------------------------------------------------------------------
# Task data and the MDM's task record
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
        answer_format=task.answer_format,
        hint_rate=task.hint_rate,
        hint_stride=task.hint_stride,
    )


def write_task_data(task: TaskSettings, data_dir: Path, mdm_files: bool = True) -> dict[str, Path]:
    """Write ``<split>.jsonl`` for each split; for subgoal mazes and ``mdm_files`` also ``<split>_mdm.jsonl``,
    where every maze appears twice, with its subgoals in the prompt and without them (what the MDM trains on)."""
    splits = build_task_splits(task)
    files = save_splits(splits, data_dir)
    if task.hint_rate is not None and mdm_files:
        for split, instances in splits.items():
            path = data_dir / f"{split}{TWO_PROMPT_SUFFIX}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for instance in instances:
                    record = instance.to_dict()
                    for prompt in (record["prompt"], record["plain_prompt"]):
                        handle.write(json.dumps({**record, "prompt": prompt}) + "\n")
    print(f"maze splits in {data_dir}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()), flush=True)
    return files


def canvas_length(tokenizer: PreTrainedTokenizerBase, task: TaskSettings) -> int:
    """Longest prompt + longest answer + one EOS: the smallest MDM canvas that holds every task instance."""
    prompt_format = PromptCompletionFormat(tokenizer, completion_field="answer")
    longest = 0
    for spec in task.specs().values():
        walls = " ".join(["f"] * (spec.height * spec.width))
        cell = "0" if task.answer_format == "cells" else "0,0"
        via = "" if task.hint_rate is None else " via" + f" {cell}" * (spec.max_moves - 1)
        prompt = f"maze {spec.height}x{spec.width} walls: {walls} start {cell} goal {cell}{via} path:"
        longest = max(longest, len(prompt_format.prompt_ids(prompt)) + spec.max_moves + 1)
    return longest


def read_task_file(checkpoint: Path) -> dict[str, Any]:
    """The ``maze_task.json`` beside a maze MDM: its task settings, canvas length and pretraining record."""
    path = checkpoint / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no {TASK_FILE}: it is not a maze MDM made by `python recipes/demo_maze.py pretrain` "
            "(make demo-pretrain). Pass such a folder, or null for the shipped one."
        )
    return json.loads(path.read_text())


def _check_work_dir(work_dir: Path, settings: dict[str, Any]) -> None:
    """A work folder holds one run's settings; refuse to mix results of different settings."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "settings.json"
    wanted = json.loads(json.dumps(settings))
    if path.is_file():
        saved = json.loads(path.read_text())
        for name, section in saved.get("settings", {}).items():  # a run from before the method's renamed keys
            saved["settings"][name] = with_current_keys(name, section)
        if saved != wanted:
            raise ValueError(
                f"{work_dir} holds a demo run made with other settings; delete it or pass --work-dir to start anew."
            )
    else:
        path.write_text(json.dumps(wanted, indent=2))


# ---------------------------------------------------------------------------------------------
# Training (recipes/instruct.py: the same recipe code as the 8B runs)
# ---------------------------------------------------------------------------------------------


def train_with_recipe(config_path: Path, overrides: list[str], label: str, train: Train) -> dict[str, Any]:
    """Run ``train`` (recipes/instruct.py's main) unless its export already exists; return what it did
    (from its log), also written to ``<output_dir>/run_info.json``.

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
    train(["--config", str(config_path), *overrides])
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


def backbone_config(tokenizer: PreTrainedTokenizerBase, sizes: dict[str, Any]) -> LLaDAConfig:
    """A LLaDA config of the given sizes whose vocabulary and special ids come from ``tokenizer``."""
    ids = {
        name: getattr(tokenizer, name)
        for name in ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id")
    }
    return LLaDAConfig(vocab_size=len(tokenizer), embedding_size=len(tokenizer), **ids, **sizes)


def path_overrides(init_from: Path, data_dir: Path, output_dir: Path, file_suffix: str = "") -> list[str]:
    """Recipe overrides that point a demo training config at this run's checkpoint, data and output
    (``<split><file_suffix>.jsonl``: ``_mdm`` for the MDM's two-prompt files)."""
    return [
        f"model.init_from={json.dumps(str(init_from))}",
        f"data.sources={json.dumps([{'path': str(data_dir / f'train{file_suffix}.jsonl')}])}",
        f"data.eval_sources={json.dumps([{'path': str(data_dir / f'validation{file_suffix}.jsonl')}])}",
        f"train.output_dir={json.dumps(str(output_dir))}",
    ]


# ---------------------------------------------------------------------------------------------
# The comparison (make demo)
# ---------------------------------------------------------------------------------------------


def _comparison_configs(
    settings: DemoSettings, steps_override: list[str], canvas: int, root: Path
) -> dict[str, Path]:
    """The training config of each method the demo trains (``compare.<method>_config``; FlexMDM always, the
    MDM baseline when set), checked: the right model kind each, a fixed canvas equal to the MDM's, and (when
    more than one trains) one budget for all."""
    configs = {
        method: repo_path(path, root)
        for method, row in MAZE_METHODS.items()
        if (path := getattr(settings.compare, row.config_key)) is not None
    }
    loaded = {method: load_config(path, steps_override) for method, path in configs.items()}
    for method, config in loaded.items():
        if config.model.kind != method:
            raise ValueError(
                f"{configs[method]} trains model.kind={config.model.kind!r}; the {method} run needs {method!r}."
            )
        if config.data.canvas_length not in (None, canvas):
            raise ValueError(
                f"{configs[method]} sets data.canvas_length={config.data.canvas_length}, but the MDM was "
                f"pretrained on a {canvas}-token canvas; use that."
            )
    budget = {
        method: (c.train.max_steps, c.train.global_batch_size, c.optim.lr) for method, c in loaded.items()
    }
    if len(set(budget.values())) > 1:
        raise ValueError(
            f"the FlexMDM and MDM runs must get the same budget (steps, batch, lr); got {budget}. Align "
            + " and ".join(map(str, configs.values()))
            + "."
        )
    return configs


def mdm_arms(task: TaskSettings) -> dict[str, bool]:
    """The MDM baselines to run, by name: whether each shows the subgoals in its prompt. On subgoal mazes
    the MDM runs with them and without them (the same paths as plain mazes); the better one is the baseline."""
    if task.hint_rate is None:
        return {"mdm": True}
    return {"mdm_with_hints": True, "mdm_without_hints": False}


def best_arm(results: dict[str, dict[str, Any]]) -> str:
    """The arm with the highest overall success (the first listed on a tie)."""
    return max(results, key=lambda arm: results[arm]["all"]["success"])


def run_comparison(
    settings: DemoSettings, work_dir: Path, quick: bool = False, *, train: Train, root: Path = REPO_ROOT
) -> dict[str, Any]:
    """Retrofit, train the baseline, evaluate both, report. Returns the summary (also in summary.json).

    ``train`` runs one training (recipes/instruct.py's main); ``quick`` shortens everything to a few steps
    and mazes (``settings.quick``): the pipeline end to end, numbers that say nothing.
    """
    started = time.perf_counter()
    check_creatable_dir(work_dir, "--work-dir")  # before any model is read
    evaluation = settings.evaluation
    checkpoint = (
        repo_path(settings.compare.mdm_checkpoint, root)
        if settings.compare.mdm_checkpoint
        else shipped_mdm_path()
    )
    task_record = read_task_file(checkpoint)
    # records from before these fields existed
    recorded_task = {"answer_format": "moves", "hint_rate": None, **task_record["task"]}
    if recorded_task != json.loads(json.dumps(dataclasses.asdict(settings.task))):
        raise ValueError(
            f"the MDM in {checkpoint} was pretrained on other mazes ({task_record['task']}) than task in the demo "
            "config; use the same task settings, or re-create the MDM with `make demo-pretrain`."
        )
    steps_override = quick_overrides(settings) if quick else []
    per_difficulty = settings.quick.num_test_per_difficulty if quick else evaluation.num_test_per_difficulty
    options = {method: dict(getattr(evaluation, method)) for method in MAZE_METHODS}
    if quick:
        options["flexmdm"]["steps"] = settings.quick.flexmdm_steps
    canvas = task_record["canvas_length"]
    configs = _comparison_configs(settings, steps_override, canvas, root)

    _check_work_dir(work_dir, {"settings": settings.to_dict(), "quick": quick, "checkpoint": str(checkpoint)})

    data_dir = work_dir / "data"
    # The two-prompt files only when a method that trains on them trains on.
    two_prompt = any(MAZE_METHODS[method].two_prompt_data for method in configs)
    split_files = write_task_data(quick_task(settings, quick), data_dir, two_prompt)
    names = list(settings.task.difficulties)
    if evaluation.split not in split_files:
        raise ValueError(f"evaluation.split={evaluation.split!r} is not one of {sorted(split_files)}.")
    instances = evaluation_subset(read_jsonl(split_files[evaluation.split]), names, per_difficulty)

    training = {}
    for method, config_path in configs.items():
        suffix = data_suffix(method, settings.task.hint_rate)
        overrides = path_overrides(checkpoint, data_dir, work_dir / method, suffix) + steps_override
        training[method] = train_with_recipe(config_path, overrides, method, train)

    tokenizer = load_tokenizer(training["flexmdm"]["final"])
    # Each method's model: its training run's export, or the shipped MDM where it was not trained on.
    models = {
        method: load_model(method, training[method]["final"] if method in training else checkpoint)
        for method in MAZE_METHODS
    }
    arms = mdm_arms(settings.task)
    # One FlexMDM arm, the MDM with and without the hints; the same canvas for all (FlexMDM's answers may
    # not grow past the MDM's canvas).
    arm_methods = {"flexmdm": ("flexmdm", True), **{arm: ("mdm", hints) for arm, hints in arms.items()}}
    solvers = {
        arm: solver(method, models[method], tokenizer, canvas, options[method], hints)
        for arm, (method, hints) in arm_methods.items()
    }
    all_rows = {}
    files: dict[str, Path] = {"maze splits": data_dir}
    for model, solve in solvers.items():
        path = work_dir / f"results_{model}.jsonl"
        all_rows[model] = evaluate(solve, instances, tokenizer, path, evaluation.batch_size, model)
        files[f"{model} answers (one JSON row per maze)"] = path
    baselines = {arm: summarize_rows(all_rows[arm], names) for arm in arms}
    chosen = best_arm(baselines)
    rows = {"flexmdm": all_rows["flexmdm"], "mdm": all_rows[chosen]}
    results = {"flexmdm": summarize_rows(rows["flexmdm"], names), "mdm": baselines[chosen]}

    summary = {
        "quick": quick,
        "difficulties": names,
        "split": evaluation.split,
        "num_test_per_difficulty": per_difficulty,
        "results": results,
        # every MDM arm run; results["mdm"] is the better one
        "baselines": {"chosen": chosen, "arms": baselines},
        "training": training,
        "sampling": {
            "flexmdm": {**options["flexmdm"], "max_length": canvas},
            "mdm": {**options["mdm"], "canvas_length": canvas, "arms": arms},
        },
        "mdm_checkpoint": {
            "path": str(checkpoint),
            "parameters": sum(p.numel() for p in models["mdm"].parameters()),
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
    write_report(
        files["report"],
        summary,
        instances,
        rows,
        dict(files),
        seed=settings.task.seed,
        difficulties=settings.task.difficulties,
        num_samples_shown=evaluation.num_samples_shown,
    )

    print("\n" + results_table(results, names) + "\n")
    print("\n".join(sample_lines(instances, rows, evaluation.num_samples_shown)))
    caption, picture = rendered_example(instances, rows["flexmdm"])
    print(f"\n{caption}\n{picture}\n")
    for name, file in files.items():
        print(f"{name}: {file}")
    return summary


# ---------------------------------------------------------------------------------------------
# Pretraining the shipped MDM (make demo-pretrain)
# ---------------------------------------------------------------------------------------------


def run_pretraining(
    settings: DemoSettings,
    work_dir: Path,
    output_dir: Path,
    quick: bool = False,
    *,
    train: Train,
    root: Path = REPO_ROOT,
) -> Path:
    """Train the maze MDM from a random tiny LLaDA and write it (with its task record) to ``output_dir``."""
    pretrain = settings.pretrain
    check_creatable_dir(work_dir, "--work-dir")  # before anything is trained
    check_creatable_dir(output_dir, "--output-dir")
    # The package's maze tokenizer: one token per cell id, move and wall mask (it ships with the MDM).
    tokenizer = load_tokenizer(shipped_mdm_path())
    init = work_dir / "llada_init"
    if not (init / "config.json").is_file():
        torch.manual_seed(pretrain.seed)
        LLaDAModelLM(backbone_config(tokenizer, pretrain.backbone)).save_pretrained(init)
        tokenizer.save_pretrained(init)
    data_dir = work_dir / "data"
    task = quick_task(settings, quick)
    write_task_data(task, data_dir)
    config_path = repo_path(pretrain.config, root)
    # the MDM's files: on subgoal mazes, every maze with and without its hints in the prompt
    overrides = path_overrides(init, data_dir, work_dir / "mdm", data_suffix("mdm", task.hint_rate))
    if quick:
        overrides += quick_overrides(settings)
    config = load_config(config_path, overrides)
    canvas = canvas_length(tokenizer, settings.task)
    if config.data.canvas_length != canvas:
        raise ValueError(
            f"{config_path} sets data.canvas_length={config.data.canvas_length}; these mazes need exactly {canvas} "
            "(longest prompt + longest answer + one EOS). Set it to that."
        )
    info = train_with_recipe(config_path, overrides, "pretrain", train)

    output_dir.mkdir(parents=True, exist_ok=True)
    for file in Path(info["final"]).iterdir():
        if file.is_file():
            shutil.copyfile(file, output_dir / file.name)
    record = {
        "task": json.loads(json.dumps(dataclasses.asdict(settings.task))),
        "canvas_length": canvas,
        "format": "flexretrofit.maze prompt/answer text, PromptCompletionFormat, EOS-padded canvas",
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
