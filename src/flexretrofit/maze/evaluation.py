"""Maze evaluation: answer test mazes with a solver, check every answer exactly, summarise the rows.

A *solver* (:func:`flexretrofit.maze.methods.solver`, one for either method; a test can pass any function
of that shape) maps a batch of :class:`~flexretrofit.maze.instances.MazeInstance` to the generated answer
token ids. :func:`evaluate` runs a solver over the mazes not yet answered, batching by difficulty, and
appends one JSONL row per maze (:class:`~flexretrofit.evaluation.results.ResultsWriter`) as each batch
finishes, so an interrupted evaluation continues where it stopped. :func:`summarize_rows` computes every
reported number from those rows alone: success with 95% Wilson intervals, the total-variation distance
between generated and true answer lengths, the exact-length share, failure reasons and generation speed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.results import ResultsWriter
from flexretrofit.evaluation.stats import total_variation_distance, wilson_interval
from flexretrofit.maze.instances import MazeInstance

# The solvers live in maze.methods (one solver, looked up by method); they stay importable here.
from flexretrofit.maze.methods import (
    Solver,
    anchored_segments,
    flex_solver,
    maze_prompt_ids,
    mdm_solver,
    row_seed,
    solver,
    true_length_solver,
)
from flexretrofit.maze.text import check_answer

__all__ = [
    "Solver",
    "anchored_segments",
    "evaluate",
    "evaluation_subset",
    "flex_solver",
    "maze_prompt_ids",
    "mdm_solver",
    "row_seed",
    "score_row",
    "solver",
    "summarize_rows",
    "true_length_solver",
]


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


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score_row(
    instance: MazeInstance, token_ids: list[int], tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
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
    tokenizer: PreTrainedTokenizerBase,
    results_path: Path,
    batch_size: int,
    label: str,
) -> list[dict[str, Any]]:
    """Answer every maze not yet in ``results_path`` (batches of one difficulty), one row per maze as it
    finishes; returns the rows of ``instances`` in their order.

    Each row is :func:`score_row`'s plus ``model`` (= ``label``), ``seconds`` (the batch's solve time over
    its size) and ``batch_size``.
    """
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
