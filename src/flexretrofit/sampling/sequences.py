"""Variable-length token batches in and out of the samplers: prompt batches, the output object, the trace,
and the checks both samplers (:mod:`.flex`, :mod:`.mdm`) make on what they are given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

TokenRows = Tensor | Sequence[Sequence[int] | Tensor] | Sequence[int] | Mapping[str, Any]


@dataclass
class GenerationStep:
    """The state after one sampler step (entry 0 of a trace is the starting state, with ``step = 0``).

    step: 1-based step index (0 = start). t: the diffusion time the step's forward pass used.
    sequences: ``[B, W]`` tokens after the step (MASK where still masked), right-padded with PAD.
    lengths: ``[B]`` row lengths after the step.
    moved_to: ``[B, W_prev]`` new position of each token of the previous state (-1 at its padding);
        None for entry 0.
    unmasked: ``[B, W_prev]`` True at the previous state's positions unmasked by this step.
    inserted: ``[B, W]`` True at the MASKs this step inserted.
    """

    step: int
    t: float
    sequences: Tensor
    lengths: Tensor
    moved_to: Tensor | None = None
    unmasked: Tensor | None = None
    inserted: Tensor | None = None


@dataclass
class GenerationOutput:
    """What every sampler returns.

    sequences: ``[B, L]`` prompt + response (prefix + middle + suffix when infilling), no MASK, right-padded
        with the PAD id (L = the longest row).
    lengths: ``[B]`` real tokens per row: prompt + response (prefix + middle + suffix when infilling); the
        generated length is ``lengths - prompt_lengths - suffix_lengths`` (each ``generated_ids()`` row).
    prompt_lengths: ``[B]`` prompt (or prefix) tokens at the start of each row.
    suffix_lengths: ``[B]`` suffix tokens at the end of each row (0 unless infilling).
    trace: every step's state when asked for (``return_trace=True``), else None.
    middles: infilling only: the generated middle of each row, as token ids (taken by position).
    """

    sequences: Tensor
    lengths: Tensor
    prompt_lengths: Tensor
    suffix_lengths: Tensor
    trace: list[GenerationStep] | None = None
    middles: list[list[int]] | None = field(default=None)

    def generated_ids(self) -> list[list[int]]:
        """The tokens each row generated (the response, or the middle when infilling), by position."""
        rows = self.sequences.tolist()
        starts, ends = self.prompt_lengths.tolist(), (self.lengths - self.suffix_lengths).tolist()
        return [row[start:end] for row, start, end in zip(rows, starts, ends)]


def as_token_rows(
    input_ids: TokenRows, attention_mask: Tensor | None = None, name: str = "input_ids"
) -> list[Tensor]:
    """Split a batch into one 1-D id tensor per row.

    ``input_ids`` is a ``[B, L]`` tensor (with an optional ``[B, L]`` attention mask whose zeros mark padding,
    on either side), a ``[L]`` tensor or list of ints (one row), a list of rows (lists or tensors), or a
    tokenizer's output (``BatchEncoding`` or any mapping with ``input_ids`` and optionally ``attention_mask``).

    Raises:
        TypeError: on text (tokenise it first: see ``_reject_text``) or a mapping without ``input_ids``.
    """
    if isinstance(input_ids, Mapping):
        input_ids, attention_mask = _from_encoding(input_ids, attention_mask, name)
    _reject_text(input_ids, name)
    if torch.is_tensor(input_ids):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
            attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
        if input_ids.dim() != 2:
            raise ValueError(f"{name} must be [B, L] or [L], got shape {tuple(input_ids.shape)}.")
        if attention_mask is None:
            return [row.long() for row in input_ids]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must match {name} {tuple(input_ids.shape)}."
            )
        return [row[keep.bool()].long() for row, keep in zip(input_ids, attention_mask)]
    if attention_mask is not None:
        raise ValueError(
            f"attention_mask is only accepted with a [B, L] tensor of {name}; lists carry their lengths."
        )
    rows = list(input_ids)
    if all(isinstance(v, int) for v in rows) and rows:
        rows = [rows]
    return [torch.as_tensor(row, dtype=torch.long).reshape(-1) for row in rows]


def prompt_rows(input_ids: TokenRows, attention_mask: Tensor | None = None) -> list[Tensor]:
    """The prompts as 1-D id rows (:func:`as_token_rows`), each with at least one token.

    Raises:
        ValueError: an empty prompt (a sampler needs a token to generate from).
    """
    prompts = as_token_rows(input_ids, attention_mask)
    for b, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(
                f"prompt {b} is empty; give every row at least one token (e.g. the BOS id) to generate from."
            )
    return prompts


def infill_rows(prefix_ids: TokenRows, suffix_ids: TokenRows) -> list[list[Tensor]]:
    """``[[prefix, suffix], ...]``: one pair of 1-D id rows per example (see :func:`check_rows_have_tokens`).

    Raises:
        ValueError: as many prefixes as suffixes are needed.
    """
    prefixes = as_token_rows(prefix_ids, name="prefix_ids")
    suffixes = as_token_rows(suffix_ids, name="suffix_ids")
    if len(prefixes) != len(suffixes):
        raise ValueError(f"got {len(prefixes)} prefixes and {len(suffixes)} suffixes; they must pair up.")
    return [[prefix, suffix] for prefix, suffix in zip(prefixes, suffixes)]


def check_rows_have_tokens(rows: Sequence[Sequence[Tensor]], generate_name: str) -> None:
    """Raise unless each row's segments (a prefix and a suffix, or anchored spans) hold a token between them.

    ``generate_name``: the sampler to use with a prompt instead, named in the message.
    """
    for b, row in enumerate(rows):
        if sum(len(segment) for segment in row) == 0:
            raise ValueError(
                f"row {b} has no token: an empty prefix and an empty suffix (or only empty segments); "
                f"use {generate_name} with a prompt."
            )


def has_insertion_head(model: nn.Module) -> bool:
    """True for a FlexMDM (it has insertion and unmask schedules), which samples with flexible length and is
    called with a time ``t``; False for a fixed-length MDM such as LLaDA."""
    return hasattr(model, "insertion_schedule") and hasattr(model, "unmask_schedule")


def _from_encoding(encoding: Mapping, attention_mask: Tensor | None, name: str) -> tuple[Any, Tensor | None]:
    """``input_ids`` and ``attention_mask`` of a tokenizer's output; list rows come back without padding."""
    if "input_ids" not in encoding:
        raise TypeError(
            f"{name} is a mapping without 'input_ids' (keys: {sorted(map(str, encoding))}); pass the "
            "tokenizer's output or the ids themselves"
        )
    if attention_mask is not None:
        raise ValueError(f"{name} already carries its attention_mask; do not pass attention_mask as well.")
    ids, mask = encoding["input_ids"], encoding.get("attention_mask")
    if mask is None or torch.is_tensor(ids):
        return ids, (None if mask is None else torch.as_tensor(mask))
    if ids and isinstance(ids[0], int):  # one unbatched row
        ids, mask = [ids], [mask]
    return [[token for token, keep in zip(row, keeps) if keep] for row, keeps in zip(ids, mask)], None


def _reject_text(input_ids: Any, name: str) -> None:
    # Text is not tokenised here: how to encode a prompt (special tokens, chat template) is the caller's
    # choice and changes the result, so it stays explicit, as in transformers' generate(); the text helpers
    # make that choice visible in their arguments.
    is_text = isinstance(input_ids, str) or (
        isinstance(input_ids, Sequence) and any(isinstance(row, str) for row in input_ids)
    )
    if is_text:
        raise TypeError(
            f"{name} holds text; tokenize it first (tokenizer(texts)['input_ids']), or pass text to "
            "flexretrofit.sampling.generate_text / infill_text with the tokenizer"
        )


def pad_rows(
    rows: Sequence[Tensor], pad_token_id: int, width: int | None = None, device=None
) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D rows into ``ids [B, width]`` (default: the longest row) and return ``lengths [B]``."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = int(lengths.max()) if width is None else width
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
    return ids.to(device), lengths.to(device)


def compact_rows(ids: Tensor, keep: Tensor, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """Move the kept tokens of each row to its front, in order, and trim the padding.

    ids ``[B, L]``, keep ``[B, L]`` bool -> (``[B, L']`` right-padded with PAD, lengths ``[B]``).
    """
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    lengths = keep.sum(dim=1)
    compacted = ids.gather(1, order)
    positions = torch.arange(ids.shape[1], device=ids.device)
    compacted = compacted.masked_fill(positions[None] >= lengths[:, None], pad_token_id)
    width = int(lengths.max()) if len(lengths) else 0
    return compacted[:, :width], lengths


def empty_output(device: torch.device, return_trace: bool) -> GenerationOutput:
    """What a sampler returns for an empty batch: no rows (``sequences`` ``[0, 0]``), and no steps traced."""
    none = torch.zeros(0, dtype=torch.long, device=device)
    return GenerationOutput(
        sequences=none.view(0, 0),
        lengths=none,
        prompt_lengths=none,
        suffix_lengths=none,
        trace=[] if return_trace else None,
    )


def check_token_ids(rows: Sequence[Tensor], model_config) -> None:
    """Raise a ValueError naming the first id outside ``[0, vocab_size)`` (one host sync for the batch).

    Unchecked, such an id ends in a bare IndexError inside the embedding, or a silently wrong token
    when it falls in the embedding's padding beyond the vocabulary.
    """
    vocab = getattr(getattr(model_config, "backbone_config", model_config), "vocab_size", None)
    if vocab is None or not rows:
        return
    ids = torch.cat([row.reshape(-1) for row in rows])
    bad = ((ids < 0) | (ids >= vocab)).nonzero()
    if len(bad) == 0:
        return
    first = int(bad[0])
    row = int((torch.tensor([len(r) for r in rows]).cumsum(0) <= first).sum())
    raise ValueError(
        f"row {row} holds token id {int(ids[first])}, outside the model's vocabulary [0, {vocab}); pass ids "
        "from the model's own tokenizer."
    )


def canvas_limit(model: nn.Module) -> int:
    """Positions a sampler may fill: a FlexMDM's ``max_length`` (its backbone keeps one for the end slot),
    else the backbone's ``max_sequence_length``."""
    config = model.config
    return int(config.max_length if has_insertion_head(model) else config.max_sequence_length)
