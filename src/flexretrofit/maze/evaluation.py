"""Maze evaluation: answer test mazes with a model, check every answer exactly, summarise the rows.

A *solver* maps a batch of :class:`~flexretrofit.maze.instances.MazeInstance` to the generated answer token ids
(one list per maze, any length). :func:`flex_solver` and :func:`mdm_solver` build one from a FlexMDM
(``generate_flex``, or anchored ``infill(segments=...)`` on subgoal mazes) or a LLaDA MDM (``generate_mdm``,
with or without the subgoals in its prompt); a test can pass any function of that shape.

:func:`evaluate` runs a solver over the mazes not yet answered, batching by difficulty, and appends one
JSONL row per maze (:class:`~flexretrofit.evaluation.results.ResultsWriter`) as each batch finishes, so an
interrupted evaluation continues where it stopped. :func:`summarize_rows` computes every reported number
from those rows alone: success with 95% Wilson intervals, the total-variation distance between generated
and true answer lengths, the exact-length share, failure reasons and generation speed.

The solvers import the samplers (and so the models); the scoring and summary need neither.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.data import PromptCompletionFormat
from flexretrofit.evaluation.lengths import total_variation_distance
from flexretrofit.evaluation.results import ResultsWriter
from flexretrofit.evaluation.stats import wilson_interval
from flexretrofit.maze.instances import MazeInstance
from flexretrofit.maze.text import check_answer, prompt_text
from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM
from flexretrofit.sampling import generate_flex, generate_mdm

Solver = Callable[[list[MazeInstance]], list[list[int]]]
"""B mazes in, B lists of generated answer token ids out (each of its own length, prompt excluded)."""


def row_seed(instance: MazeInstance) -> int:
    """A sampler seed from the maze content: the same maze gets the same draws in any batch or run."""
    return int(instance.canonical_hash[:15], 16)


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
# Solvers
# ---------------------------------------------------------------------------------------------


def maze_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, show_hints: bool = True
) -> Callable[[Sequence[MazeInstance]], list[list[int]]]:
    """The prompt token ids of each maze, as the training data formats them (``PromptCompletionFormat``);
    ``show_hints=False`` leaves a subgoal maze's hints out of the prompt."""
    prompt_format = PromptCompletionFormat(tokenizer, completion_field="answer")
    return lambda instances: [
        prompt_format.prompt_ids(prompt_text(instance, show_hints=show_hints)) for instance in instances
    ]


def anchored_segments(
    instance: MazeInstance, prompt_ids: list[int], tokenizer: PreTrainedTokenizerBase
) -> list[list[int]]:
    """``[prompt, anchor_run_1, ..., anchor_run_k]``: the segments a FlexMDM keeps on a subgoal maze (each
    run of consecutive given cells, ending with the goal), tokenised piece by piece as in training."""
    anchors = [piece["text"] for piece in instance.answer_pieces() if piece["anchor"]]
    return [prompt_ids, *(tokenizer(text, add_special_tokens=False)["input_ids"] for text in anchors)]


def flex_solver(
    model: FlexMDMForMaskedDiffusion,
    tokenizer: PreTrainedTokenizerBase,
    cap: int,
    options: dict[str, Any],
) -> Solver:
    """Answers of model-chosen length, at most ``cap`` tokens in all (prompt included), seeded per maze
    (:func:`row_seed`). ``options`` go to the sampler (``steps``, ``temperature``, ...).

    A plain maze is generated from its prompt alone (``generate_flex``). A subgoal maze is anchored
    infilling (``infill(segments=...)``): the prompt and each run of given cells (:func:`anchored_segments`)
    stay in place and the model inserts and unmasks the cells between them; the answer is everything after
    the prompt, anchors included. Each batch of B mazes is B rows of their own length.
    """
    prompt_ids = maze_prompt_ids(tokenizer)

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        prompts = prompt_ids(instances)
        seeds = [row_seed(instance) for instance in instances]
        if all(instance.hints is None for instance in instances):
            output = generate_flex(model, prompts, max_length=cap, row_seeds=seeds, **options)
            return output.generated_ids()
        segments = [anchored_segments(i, p, tokenizer) for i, p in zip(instances, prompts)]
        output = model.infill(segments=segments, max_length=cap, row_seeds=seeds, **options)
        rows, starts, ends = (
            output.sequences.tolist(),
            output.prompt_lengths.tolist(),
            output.lengths.tolist(),
        )
        return [row[start:end] for row, start, end in zip(rows, starts, ends)]

    return solve


def mdm_solver(
    model: LLaDAModelLM,
    tokenizer: PreTrainedTokenizerBase,
    canvas: int,
    options: dict[str, Any],
    show_hints: bool = True,
) -> Solver:
    """LLaDA's sampler on the training canvas: ``canvas - prompt`` MASKs, cut at the first EOS.

    Prompts of one length P share a canvas (B, ``canvas``), one block of ``canvas - P`` positions unmasked
    one per step; a batch with several prompt lengths (subgoal mazes list their hints) runs one call per
    length. The solver returns each row's answer up to its first EOS. ``options`` go to ``generate_mdm``;
    ``show_hints=False`` gives a subgoal maze's prompt without its hints (the plain-maze baseline).
    """
    prompt_ids = maze_prompt_ids(tokenizer, show_hints)

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        prompts = prompt_ids(instances)
        answers: list[list[int]] = [[] for _ in instances]
        for length in sorted({len(p) for p in prompts}):
            rows = [b for b, prompt in enumerate(prompts) if len(prompt) == length]
            gen_length = canvas - length
            output = generate_mdm(
                model,
                [prompts[b] for b in rows],
                gen_length=gen_length,
                block_length=gen_length,
                steps=gen_length,
                suppress_tokens=[],  # EOS is how the MDM ends its answer; the sampler cuts there
                **options,
            )
            for b, ids in zip(rows, output.generated_ids()):
                answers[b] = ids
        return answers

    return solve


def true_length_solver(
    model: LLaDAModelLM | FlexMDMForMaskedDiffusion, tokenizer: PreTrainedTokenizerBase
) -> Solver:
    """Diagnostic, not an arm: each prompt plus exactly its true number of MASKs, unmasked most-confident
    first one per step (LLaDA's sampler; a FlexMDM runs with t = the fraction unmasked), EOS never emitted.

    It measures token prediction with the length decision taken away: mazes of one true length ``n`` form
    a ``[B, P + n]`` canvas each.
    """
    prompt_ids = maze_prompt_ids(tokenizer)

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        answers: dict[str, list[int]] = {}
        for length in sorted({instance.num_moves for instance in instances}):
            group = [instance for instance in instances if instance.num_moves == length]
            prompts = prompt_ids(group)
            output = generate_mdm(model, prompts, gen_length=length, block_length=length, steps=length)
            for instance, ids in zip(group, output.generated_ids()):
                answers[instance.id] = ids
        return [answers[instance.id] for instance in instances]

    return solve


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
