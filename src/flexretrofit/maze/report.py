"""The maze comparison's report: ``report.md`` and ``report.png`` for FlexMDM vs MDM, from the result rows.

Every function reads the per-maze rows (:func:`flexretrofit.maze.evaluation.evaluate`) and their summary
(:func:`flexretrofit.maze.evaluation.summarize_rows`) for the two models of :data:`MODELS`; none runs a
model. :func:`write_report` assembles the Markdown file (results table, what the numbers say, speed and
budget, samples, a rendered maze, the files); the other functions give its parts, which the demo also
prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flexretrofit.maze.instances import MazeInstance, render
from flexretrofit.maze.text import answer_text, parse_answer, prompt_text

MODELS = ("mdm", "flexmdm")
LABELS = {"mdm": "MDM (LLaDA sampler)", "flexmdm": "FlexMDM (retrofit)"}
PAPER = {"mdm": (68.4, 29.3, 24.2), "flexmdm": (92.3, 90.4, 90.0)}  # easy / medium / hard, %
COLORS = {"reference": "tab:gray", "mdm": "tab:orange", "flexmdm": "tab:blue"}
# How each model generates, filled from the summary's ``sampling[model]`` (its sampler settings).
GENERATION = {
    "mdm": "generate_mdm, one forward pass per canvas position after the prompt ({canvas_length} - prompt)",
    "flexmdm": "generate_flex, {steps} forward passes",
}


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
                [c / len(values) for c in counts], edges, label=label, color=COLORS[key], linewidth=1.6
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
        axes.bar(positions, heights, width, yerr=errors, capsize=4, label=LABELS[model], color=COLORS[model])
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


def verdict_lines(results: dict[str, dict[str, Any]], names: Sequence[str]) -> list[str]:
    """What the numbers say, per difficulty: a success difference counts only where the two 95% intervals
    do not overlap (a conservative reading); the length TV comparison is stated as measured."""
    lines = []
    for name in [*names, "all"]:
        mdm, flex = results["mdm"][name], results["flexmdm"][name]
        if flex["ci95"][0] > mdm["ci95"][1]:
            success = "FlexMDM succeeds more often than the MDM"
        elif flex["ci95"][1] < mdm["ci95"][0]:
            success = "the MDM succeeds more often than FlexMDM"
        else:
            success = "no clear success difference (the 95% intervals overlap)"
        closer = "FlexMDM's" if flex["length_tv"] < mdm["length_tv"] else "the MDM's"
        if flex["length_tv"] == mdm["length_tv"]:
            closer = "neither model's"
        lines.append(
            f"- {name}: {success}; {closer} answer lengths are closer to the true ones in distribution "
            f"(TV {flex['length_tv']:.3f} vs {mdm['length_tv']:.3f}); the exact length is right for "
            f"{_pct(flex['length_exact'])} (FlexMDM) vs {_pct(mdm['length_exact'])} (MDM) of the mazes."
        )
    return lines


def results_table(results: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """A Markdown table, one line per difficulty and ``all``: success with 95% CI, length TV, exact length."""
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
        lines.append(f"- {instance.difficulty} `{prompt_text(instance)}`")
        lines.append(f"  - true path ({instance.num_moves} moves): `{answer_text(instance).strip()}`")
        for model in ("flexmdm", "mdm"):
            row = rows[model][index]
            verdict = "ok" if row["valid"] else row["reason"]
            lines.append(
                f"  - {model} ({row['generated_tokens']} tokens, {verdict}): "
                f"`{row['generated_text'].strip() or '(empty)'}`"
            )
    return lines


def rendered_example(instances: Sequence[MazeInstance], rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """A drawing of one maze with the FlexMDM's path: its first solved hard-most maze, else the first maze."""
    order = sorted(range(len(instances)), key=lambda i: (not rows[i]["valid"], -instances[i].num_moves))
    index = order[0]
    try:
        instance = instances[index]
        moves = parse_answer(
            rows[index]["generated_text"],
            instance.answer_format,
            instance.height,
            instance.width,
            instance.start,
        )
    except ValueError:
        moves = ()
    outcome = "solved" if rows[index]["valid"] else rows[index]["reason"]
    caption = (
        f"{instances[index].difficulty} maze `{instances[index].id}`, FlexMDM answer "
        f"`{rows[index]['generated_text'].strip() or '(empty)'}` ({outcome}); "
        "S start, G goal, * cells the answer visits (until an illegal move)"
    )
    return caption, render(instances[index], moves)


def pretraining_line(pretraining: dict[str, Any] | None) -> str:
    """One sentence on how the MDM was pretrained, from the ``pretraining`` record of its maze_task.json."""
    if not pretraining:
        return "The MDM's pretraining record is missing from its maze_task.json."
    backbone = pretraining["backbone"]
    return (
        f"The MDM was pretrained from a random LLaDA ({backbone['n_layers']} layers, d={backbone['d_model']}, "
        f"{backbone['n_heads']} heads) for {pretraining['steps']} steps x {pretraining['global_batch_size']} mazes "
        f"({pretraining['wall_seconds']} s on {pretraining['cpu_count']} CPU cores) with `{pretraining['recipe']}` "
        "(`make demo-pretrain`)."
    )


def baseline_lines(baselines: dict[str, Any] | None, names: Sequence[str]) -> list[str]:
    """The MDM arms (with and without the subgoals in its prompt) and which one is the baseline."""
    if not baselines or len(baselines["arms"]) < 2:
        return []
    lines = [
        "MDM baselines (the better one overall is the row `mdm` above):",
        "",
        "| MDM arm | " + " | ".join(names) + " | all |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for arm, result in baselines["arms"].items():
        mark = " (baseline)" if arm == baselines["chosen"] else ""
        cells = [f"{_pct(result[name]['success'])}" for name in [*names, "all"]]
        lines.append(f"| {arm}{mark} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(
    path: Path,
    summary: dict[str, Any],
    instances: Sequence[MazeInstance],
    rows: dict[str, list[dict[str, Any]]],
    files: Mapping[str, Path],
    *,
    seed: int,
    difficulties: Mapping[str, Mapping[str, int]],
    num_samples_shown: int,
) -> Path:
    """Write ``report.md`` from the demo's ``summary`` (summary.json) and the rows of both models.

    ``seed`` and ``difficulties`` are the task's (``task.seed``, ``task.difficulties``: name -> height, width,
    min_moves, max_moves); ``num_samples_shown`` mazes are listed with both answers; ``files`` are listed
    last (name -> path).
    """
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
        + (
            "against the same MDM trained for the same budget. "
            if "mdm" in training
            else "against the same MDM as pretrained (more MDM training was measured to change nothing; "
            "docs/maze_retrofit_investigation.md). "
        )
        + (
            "**Quick run (a few steps): the numbers say nothing about the method.**"
            if summary["quick"]
            else ""
        ),
        "",
        "## Results",
        "",
        f"Mazes: the first {summary['num_test_per_difficulty']} of each difficulty of the {summary['split']} split "
        f"(seed {seed}, disjoint from all training data). Success = legal moves that reach the goal by "
        "the shortest path, through every given subgoal (`maze.text.check_answer`). Length TV = total-variation distance between the generated "
        "and the true answer lengths (tokens; one token per move); exact length = share of answers of the true length.",
        "",
        results_table(results, names),
        "",
        f"Paper (trained from scratch, larger mazes): {paper} (MDM vs FlexMDM success).",
        "",
        "Difficulties: "
        + ", ".join(
            f"{name} = {spec['height']}x{spec['width']} grid, {spec['min_moves']}-{spec['max_moves']} moves"
            for name, spec in difficulties.items()
        )
        + ".",
        "",
        "What the numbers say:",
        "",
        *verdict_lines(results, names),
        "",
        *baseline_lines(summary.get("baselines"), names),
        "## Speed and budget",
        "",
        "| model | extra training | generation | tokens/s | mazes/s |",
        "|---|---|---|---|---|",
    ]
    for model in MODELS:
        info = training.get(model)
        generation = GENERATION[model].format(**summary["sampling"][model])
        trained = (
            "none (as pretrained)"
            if info is None
            else f"{info['steps']} steps x {info['global_batch_size']} mazes, {info['wall_seconds']} s, "
            f"final loss {info['final_train_loss']:.3f}"
        )
        lines.append(
            f"| {model} | {trained} | {generation} | {speed[model]['tokens_per_second']:.0f} "
            f"| {speed[model]['mazes_per_second']:.1f} |"
        )
    lines += [
        "",
        f"CPU: {summary['machine']['cpu_count']} cores, {summary['machine']['torch_threads']} torch threads. "
        "Tokens/s counts generated answer tokens (MDM: up to its first EOS). The two training losses are "
        "different objectives (FlexMDM: unmasking + insertion per answer token; MDM: unmasking per canvas "
        "token) and do not compare.",
        "",
        pretraining_line(summary["mdm_checkpoint"].get("pretraining")),
        "",
        "## Samples",
        "",
        *sample_lines(instances, rows, num_samples_shown),
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
