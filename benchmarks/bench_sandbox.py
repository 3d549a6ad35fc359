"""Sandbox throughput: the official single-line infilling tasks, each judged with its canonical middle.

Every program must pass (checked), so this also proves the harness accepts every reference solution.
With ``--baseline-src DIR`` the same count of canonical programs is scored by another checkout's
``flexretrofit`` (e.g. ``git worktree add /tmp/before <commit>``, then ``--baseline-src /tmp/before/src``)
in a subprocess, alternating with this tree, so machine load hits both alike; the ratio is printed.

    python benchmarks/bench_sandbox.py                      # 1033 tasks, 2 workers
    python benchmarks/bench_sandbox.py --limit 300 --baseline-src /tmp/before/src --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# Runs in the baseline's interpreter with its src/ first on the path; it prints the seconds it took. It
# uses only what both versions have: tasks built or loaded per the version, scored by score_completions.
BASELINE_SNIPPET = """
import json, sys, time
from flexretrofit.evaluation import humaneval_infill as infill
limit, workers = int(sys.argv[1]), int(sys.argv[2])
if hasattr(infill, "load_infill_tasks"):
    tasks = infill.load_infill_tasks("single_line")[:limit]
else:
    tasks = infill.build_infill_tasks(kind="single_line")[:limit]
started = time.monotonic()
results = infill.score_completions(tasks, [t.canonical_middle for t in tasks], max_workers=workers)
elapsed = time.monotonic() - started
print(json.dumps({"seconds": elapsed, "passed": sum(r.passed for r in results), "tasks": len(tasks)}))
"""


def run_tree(src: str | None, limit: int, workers: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = src
    command = [sys.executable, "-c", BASELINE_SNIPPET, str(limit), str(workers)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=1033, help="number of tasks (default: all 1033)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--baseline-src", default=None, help="src/ folder of another checkout to compare with"
    )
    args = parser.parse_args()
    if args.limit < 1 or args.workers < 1 or args.repeats < 1:
        parser.error("--limit, --workers and --repeats must be >= 1")
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    trees = {"this tree": here}
    if args.baseline_src:
        trees = {"baseline": args.baseline_src, **trees}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, src in trees.items():
            run = run_tree(src, args.limit, args.workers)
            if run["passed"] != run["tasks"]:
                sys.exit(f"{name}: only {run['passed']} of {run['tasks']} canonical programs passed")
            rates[name].append(run["tasks"] / run["seconds"])
    for name, values in rates.items():
        print(
            f"{name:>10}: {statistics.median(values):6.1f} tasks/s (median of {len(values)}; {args.workers} workers)"
        )
    if args.baseline_src:
        ratio = statistics.median(rates["baseline"]) / statistics.median(rates["this tree"])
        print(f"slowdown this tree vs baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
