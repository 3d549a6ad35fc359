"""The maze task per method: one solver for FlexMDM and MDM, and the table that says how each method runs.

A *solver* maps a batch of B :class:`~flexretrofit.maze.instances.MazeInstance` to the generated answer
token ids (one list per maze, any length, prompt excluded). :func:`solver` builds one for a method from
two tables: the method's sampler (:data:`flexretrofit.sampling.methods.SAMPLING_METHODS`: generate, infill)
and its row of :data:`MAZE_METHODS`, which says how a batch of mazes is handed to that sampler::

    flexmdm  answers of model-chosen length, at most ``canvas`` tokens in all; subgoal mazes by anchored
             infilling (prompt and given cells kept in place)        settings evaluation.flexmdm, one data file
    mdm      LLaDA's fixed canvas: ``canvas - prompt`` MASKs per prompt length, cut at the first EOS
                                                                     settings evaluation.mdm, two-prompt data

Callers (the demo, ``benchmarks/maze_ablation.py``) look the method up here instead of branching on it.
:func:`true_length_solver` is a diagnostic that works on either model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flexretrofit.data import PromptCompletionFormat
from flexretrofit.maze.instances import MazeInstance
from flexretrofit.maze.text import prompt_text
from flexretrofit.methods import Method, method_name
from flexretrofit.models.auto import method_model_class
from flexretrofit.sampling.mdm import generate_mdm
from flexretrofit.sampling.methods import SAMPLING_METHODS, SamplingMethod

Solver = Callable[[list[MazeInstance]], list[list[int]]]
"""B mazes in, B lists of generated answer token ids out (each of its own length, prompt excluded)."""


@dataclass(frozen=True)
class SolverSetup:
    """What a solver holds between batches: the method's sampler (its row of the sampling table), the
    model, the tokenizer, the length budget ``canvas`` (prompt included) and the sampler ``options``."""

    sampler: SamplingMethod
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    canvas: int
    options: dict[str, Any]


Answer = Callable[[SolverSetup, list[MazeInstance], list[list[int]]], list[list[int]]]
"""``answer(setup, instances, prompts)``: B mazes and their prompt ids through the sampler, B answers out."""


def row_seed(instance: MazeInstance) -> int:
    """A sampler seed from the maze content: the same maze gets the same draws in any batch or run."""
    return int(instance.canonical_hash[:15], 16)


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


# ---------------------------------------------------------------------------------------------
# How each method answers a batch
# ---------------------------------------------------------------------------------------------


def answer_flexible(
    setup: SolverSetup, instances: list[MazeInstance], prompts: list[list[int]]
) -> list[list[int]]:
    """Answers of model-chosen length, at most ``setup.canvas`` tokens in all (prompt included), seeded per
    maze (:func:`row_seed`). ``setup.options`` go to the sampler (``steps``, ``temperature``, ...).

    A plain maze is generated from its prompt alone (``sampler.generate``). A subgoal maze is anchored
    infilling (``sampler.infill(segments=...)``): the prompt and each run of given cells
    (:func:`anchored_segments`) stay in place and the model inserts and unmasks the cells between them; the
    answer is everything after the prompt, anchors included. A batch of B mazes is B rows of their own length.
    """
    limits = {"max_length": setup.canvas, "row_seeds": [row_seed(instance) for instance in instances]}
    if all(instance.hints is None for instance in instances):
        output = setup.sampler.generate(setup.model, prompts, **limits, **setup.options)
        return output.generated_ids()
    segments = [anchored_segments(i, p, setup.tokenizer) for i, p in zip(instances, prompts)]
    output = setup.sampler.infill(setup.model, segments=segments, **limits, **setup.options)
    rows, starts, ends = output.sequences.tolist(), output.prompt_lengths.tolist(), output.lengths.tolist()
    return [row[start:end] for row, start, end in zip(rows, starts, ends)]


def answer_on_canvas(
    setup: SolverSetup, instances: list[MazeInstance], prompts: list[list[int]]
) -> list[list[int]]:
    """LLaDA's sampler on the training canvas: ``canvas - prompt`` MASKs, cut at the first EOS.

    Prompts of one length P share a canvas (B, ``canvas``), one block of ``canvas - P`` positions unmasked
    one per step; a batch with several prompt lengths (subgoal mazes list their hints) runs one call per
    length. Each row's answer is its generated ids up to its first EOS.
    """
    answers: list[list[int]] = [[] for _ in instances]
    for length in sorted({len(p) for p in prompts}):
        rows = [b for b, prompt in enumerate(prompts) if len(prompt) == length]
        gen_length = setup.canvas - length
        output = setup.sampler.generate(
            setup.model,
            [prompts[b] for b in rows],
            gen_length=gen_length,
            block_length=gen_length,
            steps=gen_length,
            suppress_tokens=[],  # EOS is how the MDM ends its answer; the sampler cuts there
            **setup.options,
        )
        for b, ids in zip(rows, output.generated_ids()):
            answers[b] = ids
    return answers


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MazeMethod:
    """How the maze task runs one method.

    - ``answer``: one batch of mazes through the method's sampler (:data:`Answer`);
    - the demo settings' ``evaluation.<name>`` holds its sampler options (and ``benchmarks/maze_ablation.py``
      takes them as ``--<name> k=v``);
    - ``config_key``: ``compare.<key>`` is the demo's training config for the method (None: not trained on);
    - ``two_prompt_data``: on subgoal mazes it trains on every maze twice, with and without the hints in
      its prompt (``<split>_mdm.jsonl``), since it runs with and without them;
    - ``forward_passes``: what one answer costs, from the sampler options (a number or a rule).
    """

    name: Method
    answer: Answer
    config_key: str
    two_prompt_data: bool
    forward_passes: Callable[[Mapping[str, Any]], int | str]


MAZE_METHODS: dict[Method, MazeMethod] = {
    "flexmdm": MazeMethod(
        "flexmdm", answer_flexible, "flexmdm_config", False, lambda options: options["steps"]
    ),
    "mdm": MazeMethod("mdm", answer_on_canvas, "mdm_config", True, lambda options: "canvas - prompt"),
}

TWO_PROMPT_SUFFIX = "_mdm"  # <split>_mdm.jsonl: every maze with and without its hints in the prompt


def maze_method(method: str) -> MazeMethod:
    """The table row of a method name (old spellings read; ValueError naming the choices otherwise)."""
    return MAZE_METHODS[method_name(method)]


def data_suffix(method: str, hint_rate: float | None) -> str:
    """The suffix of the method's training files, ``<split><suffix>.jsonl``: the two-prompt files on
    subgoal mazes for a method that runs with and without the hints, else none."""
    return TWO_PROMPT_SUFFIX if maze_method(method).two_prompt_data and hint_rate is not None else ""


def load_model(method: str, path: str | os.PathLike) -> PreTrainedModel:
    """The checkpoint at ``path`` as the method's model class (:mod:`flexretrofit.models.auto`'s table),
    in eval mode."""
    return method_model_class(method).from_pretrained(path).eval()


def solver(
    method: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    canvas: int,
    options: Mapping[str, Any],
    show_hints: bool = True,
) -> Solver:
    """The method's solver: prompts (``show_hints=False``: a subgoal maze's prompt without its hints), then
    its row's ``answer`` through its sampler. ``canvas`` is the length budget (prompt included) both methods
    share: FlexMDM's answers may not grow past the MDM's canvas. ``options`` go to the sampler."""
    row = maze_method(method)
    setup = SolverSetup(SAMPLING_METHODS[row.name], model, tokenizer, canvas, dict(options))
    prompt_ids = maze_prompt_ids(tokenizer, show_hints)

    def solve(instances: list[MazeInstance]) -> list[list[int]]:
        return row.answer(setup, instances, prompt_ids(instances))

    return solve


# The solvers' earlier names: flex_solver(model, tokenizer, cap, options), mdm_solver(..., show_hints).
flex_solver = functools.partial(solver, "flexmdm")
mdm_solver = functools.partial(solver, "mdm")


def true_length_solver(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Solver:
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
            output = generate_mdm(
                model, prompt_ids(group), gen_length=length, block_length=length, steps=length
            )
            for instance, ids in zip(group, output.generated_ids()):
                answers[instance.id] = ids
        return [answers[instance.id] for instance in instances]

    return solve
