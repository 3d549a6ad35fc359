"""Render rows written by benchmarks/maze_ablation.py as a markdown table (one row per lever, with its command).

python benchmarks/maze_ablation_table.py runs/maze_ablation/rows.jsonl [more rows.jsonl ...]
"""

from __future__ import annotations

import json
import sys


def cell(stats: dict) -> str:
    low, high = stats["ci95"]
    return f"{100 * stats['success']:.0f} [{100 * low:.0f}, {100 * high:.0f}]"


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for path in paths for line in open(path) if line.strip()]
    names = [key for key in rows[0] if isinstance(rows[0][key], dict) and "ci95" in rows[0][key]]
    print(
        "| row | "
        + " | ".join(f"{n} success % [95% CI]" for n in names)
        + " | exact length (all) | length TV (all) "
        "| train s | forward passes / answer | command |"
    )
    print("|" + "---|" * (len(names) + 6))
    for row in rows:
        print(
            f"| {row['name']} | "
            + " | ".join(cell(row[n]) for n in names)
            + f" | {100 * row['all']['exact']:.0f}% | {row['all']['tv']:.2f} | {row['train_seconds']} "
            f"| {row['forward_passes']} | `{row.get('command', '')}` |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
