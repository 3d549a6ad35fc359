"""One row of the maze retrofit investigation: train one arm with config overrides, evaluate on the demo's
test mazes, write the row (success with 95% intervals, exact-length share, length TV, wall time, forward
passes per answer).

    python benchmarks/maze_ablation.py NAME [--arm flexmdm|mdm] [--train key=value ...] [--flexmdm key=value ...]
        [--recipe-config FILE] [--no-hints] [--export DIR]

Every row shares the demo's data and test mazes (runs/maze_ablation/data). Rows land in
runs/maze_ablation/<NAME>/row.json and are appended to runs/maze_ablation/rows.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import runpy
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

from flexretrofit.maze.demo import (
    path_overrides,
    read_task_file,
    shipped_mdm_path,
    train_with_recipe,
    write_task_data,
)
from flexretrofit.maze.evaluation import evaluate, evaluation_subset, summarize_rows
from flexretrofit.maze.instances import read_jsonl
from flexretrofit.maze.methods import data_suffix, load_model, maze_method, solver, true_length_solver
from flexretrofit.maze.settings import DEFAULT_CONFIG, load_settings, repo_path
from flexretrofit.methods import METHODS
from flexretrofit.models import load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def train_with_instruct(argv: list[str]) -> None:
    """One training run of recipes/instruct.py, as the demo trains."""
    runpy.run_path(str(REPO / "recipes" / "instruct.py"))["main"](argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--arm", default="flexmdm", choices=METHODS)
    parser.add_argument("--train", nargs="*", default=[], help="recipe overrides (key=value)")
    parser.add_argument(  # --flex: the older spelling
        "--flexmdm", "--flex", nargs="*", default=[], help="sampler options for generate_flex (key=value)"
    )
    parser.add_argument("--mdm", nargs="*", default=[], help="sampler options for generate_mdm (key=value)")
    parser.add_argument("--init", default=None, help="checkpoint to start from (default: the shipped MDM)")
    parser.add_argument(
        "--task-record", default=None, help="maze MDM whose canvas FlexMDM's cap follows (default: --init)"
    )
    parser.add_argument("--export", default=None, help="evaluate this exported folder (no training)")
    parser.add_argument("--from-run", default=None, help="evaluate the export of another row (no training)")
    parser.add_argument("--work", default="runs/maze_ablation")
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="demo settings (task, configs, evaluation)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--recipe-config", default=None, help="training config (default: the demo's for the arm)"
    )
    parser.add_argument(
        "--no-hints",
        action="store_true",
        help="subgoal mazes without the hints in the prompt (the MDM arm's baseline)",
    )
    parser.add_argument(
        "--test-task",
        nargs="*",
        default=[],
        help="evaluate on test mazes drawn with these task overrides (key=value: hint_rate, hint_stride)",
    )
    parser.add_argument(
        "--oracle-length", action="store_true", help="diagnostic: give the model the true answer length"
    )
    args = parser.parse_args()
    method = maze_method(args.arm)
    torch.set_num_threads(1)
    settings = load_settings(args.config)
    work = Path(args.work)
    data_dir = work / "data"
    if not (data_dir / "test.jsonl").is_file():
        write_task_data(settings.task, data_dir)
    checkpoint = Path(args.init) if args.init else shipped_mdm_path()
    canvas = read_task_file(Path(args.task_record) if args.task_record else checkpoint)["canvas_length"]
    names = list(settings.task.difficulties)
    test_dir = data_dir
    if args.test_task:
        # The same test mazes (the hints do not change which mazes are drawn), other hints.
        changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.test_task)}
        test_dir = work / ("data_" + "_".join(f"{k}{v}" for k, v in changes.items()))
        if not (test_dir / "test.jsonl").is_file():
            task = dataclasses.replace(settings.task, num_train=0, num_validation=0, **changes)
            write_task_data(task, test_dir)
    instances = evaluation_subset(
        read_jsonl(test_dir / f"{args.split}.jsonl"), names, settings.evaluation.num_test_per_difficulty
    )
    run_dir = work / args.name
    if args.export:
        final, info = Path(args.export), {"wall_seconds": 0}
    elif args.from_run:
        final = work / args.from_run / args.arm / "final"
        info = json.loads((work / args.from_run / args.arm / "run_info.json").read_text())
    else:
        config = repo_path(args.recipe_config or getattr(settings.compare, method.config_key))
        suffix = data_suffix(args.arm, settings.task.hint_rate)
        overrides = path_overrides(checkpoint, data_dir, run_dir / args.arm, suffix) + args.train
        info = train_with_recipe(config, overrides, args.arm, train_with_instruct)
        final = Path(info["final"])
    tokenizer = load_tokenizer(final)
    parse = lambda items: {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}  # noqa: E731
    model = load_model(args.arm, final)
    # The arm's sampler options: the demo's evaluation.<arm>, then --<arm> k=v (--flexmdm or --mdm).
    options = {**getattr(settings.evaluation, args.arm), **parse(getattr(args, args.arm))}
    solve = solver(args.arm, model, tokenizer, canvas, options, show_hints=not args.no_hints)
    passes = method.forward_passes(options)
    if args.oracle_length:
        solve, passes = true_length_solver(model, tokenizer), "true length"
    results_path = run_dir / f"results_{args.arm}.jsonl"
    if results_path.exists():
        results_path.unlink()
    began = time.perf_counter()
    rows = evaluate(solve, instances, tokenizer, results_path, 50, args.arm)
    summary = summarize_rows(rows, names)
    row = {
        "command": "python benchmarks/maze_ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "name": args.name,
        "arm": args.arm,
        "train": args.train,
        "options": options,
        "from_run": args.from_run,
        "test_task": args.test_task,
        "init": str(checkpoint),
        "train_seconds": info.get("wall_seconds"),
        "eval_seconds": round(time.perf_counter() - began, 1),
        "forward_passes": passes,
        **{
            name: {
                "success": summary[name]["success"],
                "ci95": summary[name]["ci95"],
                "exact": summary[name]["length_exact"],
                "tv": summary[name]["length_tv"],
            }
            for name in [*names, "all"]
        },
    }
    (run_dir / "row.json").write_text(json.dumps(row, indent=2))
    with (work / "rows.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    cells = " | ".join(
        f"{name} {100 * row[name]['success']:.0f}% [{100 * row[name]['ci95'][0]:.0f},{100 * row[name]['ci95'][1]:.0f}]"
        f" ex {100 * row[name]['exact']:.0f}% tv {row[name]['tv']:.2f}"
        for name in [*names, "all"]
    )
    print(f"ROW {args.name}: {cells} | train {row['train_seconds']} s")


if __name__ == "__main__":
    main()
