"""Drive any generator over a benchmark, resumably: generate a batch, score it, append the rows.

The evaluation code never imports a sampler. A generator is any callable that takes a list of
prompts (whatever the task builds: text, chat messages, :class:`PromptIds`) and returns one
output per prompt, either the generated text or a :class:`Generation` that also carries the
number of generated tokens (for length statistics)::

    def generate(prompts: list[str]) -> list[Generation]:
        ids = sampler.generate(tokenize(prompts))            # any model, any sampler
        return [Generation(tokenizer.decode(g), num_tokens=len(g)) for g in ids]

The output must be only what the model generated, never the prompt: answers are extracted from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flexretrofit.evaluation.results import ResultsWriter


@dataclass(frozen=True)
class PromptIds:
    """One tokenised prompt. ``prefix``: the prompt (or the text before the gap); ``suffix``: the text
    after the gap (empty unless infilling); ``seed``: the row's sampler seed, so that a row's output
    does not depend on its batch, shard or position in the run."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...] = ()
    seed: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prefix) + len(self.suffix)


@dataclass(frozen=True)
class Generation:
    """One generated continuation. ``num_tokens``: its length in tokens, when the generator knows it."""

    text: str
    num_tokens: int | None = None


GenerateFn = Callable[[list[Any]], Sequence["str | Generation"]]
ScoreFn = Callable[[list[int], list[Generation]], list[dict[str, Any]]]


def as_generation(output: str | Generation) -> Generation:
    if isinstance(output, Generation):
        return output
    if isinstance(output, str):
        return Generation(output)
    raise TypeError(f"a generator must return str or Generation per prompt, got {type(output).__name__}")


def run_resumable(
    ids: Sequence[str],
    prompts: Sequence[Any],
    generate: GenerateFn,
    score: ScoreFn,
    writer: ResultsWriter,
    batch_size: int = 8,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Generate and score every item whose id is not yet in ``writer``; return the rows of ``ids``.

    Args:
        ids: unique row ids, one per item (e.g. ``"HumanEval/0/L3#0"`` for sample 0 of a task).
        prompts: what ``generate`` receives for each item, aligned with ``ids``.
        generate: batch generator, see the module docstring.
        score: ``score(indices, generations)`` -> one row (dict) per index; the runner adds the id.
        writer: where rows go; rows already there are skipped, so a rerun resumes.
        batch_size: prompts per ``generate`` call.
        on_batch: ``on_batch(done, total)`` after each batch, e.g. for a progress bar.

    Returns:
        The rows for ``ids`` in the order of ``ids`` (old and new).
    """
    if len(ids) != len(prompts):
        raise ValueError(f"got {len(ids)} ids and {len(prompts)} prompts; they must align")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique (add a sample index for repeated prompts)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending = [index for index, row_id in enumerate(ids) if row_id not in writer]
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        outputs = list(generate([prompts[index] for index in batch]))
        if len(outputs) != len(batch):
            raise ValueError(f"generator returned {len(outputs)} outputs for {len(batch)} prompts")
        rows = score(batch, [as_generation(output) for output in outputs])
        if len(rows) != len(batch):
            raise ValueError(f"score returned {len(rows)} rows for {len(batch)} items")
        for index, row in zip(batch, rows):
            writer.write({writer.id_key: ids[index], **row})
        if on_batch is not None:
            on_batch(len(ids) - len(pending) + start + len(batch), len(ids))
    by_id = {row[writer.id_key]: row for row in writer.rows}
    return [by_id[row_id] for row_id in ids]
