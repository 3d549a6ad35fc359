"""Maze demo: retrofit a small pretrained LLaDA-architecture MDM into a FlexMDM and measure what it buys.

    python recipes/demo_maze.py                # make demo: retrofit, train the baseline, evaluate, report
    python recipes/demo_maze.py --quick        # a few steps and mazes: the pipeline end to end (tests)
    python recipes/demo_maze.py pretrain       # make demo-pretrain: re-create the shipped maze MDM

The comparison (``run``), top to bottom:

1. write the subgoal-maze splits (fixed seeds, ``recipes/configs/demo/maze.yaml``) to ``<work>/data``;
2. retrofit the shipped MDM (``src/flexretrofit/assets/maze_mdm``) into a FlexMDM with the 8B retrofit's
   code: ``recipes/instruct.py`` with ``retrofit_flexmdm.yaml`` (``FlexMDMForMaskedDiffusion.from_llada``;
   prompt and anchors, the given subgoals and the goal, protected; no EOS);
3. answer every test maze with the FlexMDM (anchored ``infill(segments=...)``) and with the MDM
   (LLaDA's ``generate_mdm``, with and without the subgoals in its prompt; the better is the baseline),
   check each answer exactly (``maze.text.check_answer``) and append one JSONL row per maze as it
   finishes, so an interrupted demo continues where it stopped;
4. summarise from those rows: success per difficulty with 95% Wilson intervals, the total-variation
   distance between generated and true answer lengths, tokens per second; write ``summary.json``,
   ``report.md`` and ``report.png``.

Training runs resume from their last checkpoint and are skipped once exported; a work folder remembers the
settings it was made with and refuses different ones (delete it or pass ``--work-dir``).

The steps are library code (``flexretrofit.maze``: ``demo``, ``evaluation``, ``report``);
this script reads the command line and hands them ``recipes/instruct.py`` to train with.
"""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path

from flexretrofit.maze.demo import run_comparison, run_pretraining
from flexretrofit.maze.settings import load_settings, repo_path
from flexretrofit.training import run_recipe
from flexretrofit.training.cli import USER_ERRORS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "demo" / "maze.yaml"


def train_with_instruct(argv: list[str]) -> None:
    """One training run of ``recipes/instruct.py`` (the same recipe code as the 8B runs)."""
    runpy.run_path(str(REPO / "recipes" / "instruct.py"))["main"](argv)


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
        output_dir = (
            Path(args.output_dir) if args.output_dir else repo_path(settings.pretrain.output_dir, REPO)
        )
        run_pretraining(
            settings, work_dir, output_dir, quick=args.quick, train=train_with_instruct, root=REPO
        )
    else:
        work_dir = Path(args.work_dir or f"runs/demo_maze{suffix}")
        run_comparison(settings, work_dir, quick=args.quick, train=train_with_instruct, root=REPO)


if __name__ == "__main__":
    # The demo's settings checks raise ValueError with the fix in the message: one line on stderr, exit 2.
    raise SystemExit(run_recipe(main, user_errors=(*USER_ERRORS, ValueError)))
