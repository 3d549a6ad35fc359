"""Flexible-length sampling of a FlexMDM: unmask and insert, step by step, on the current lengths.

Step ``k`` of ``N`` (``t = k / N``, ``dt = 1 / N``), for every row at once:

1. one forward pass on the current sequences (right-padded to a multiple of ``bucket_size``, padding
   keys masked), with token logits only at MASK positions;
2. unmask ``K ~ Poisson(#MASK * kappa_beta(t) * dt)`` MASKs (clamped to #MASK), the most confident ones,
   optionally within a sliding window of the leftmost MASKs; each gets its argmax (or sampled) token;
3. insert ``e_i ~ Poisson(g_hat_i * kappa_alpha(t) * dt)`` MASKs at every eligible slot ``i``, keeping
   insertions slot by slot from the left until the length cap;

   with ``count_distribution="binomial"`` the counts are the exact jumps of the process over the step
   instead: ``K ~ Bin(#MASK, p_beta)`` and ``e_i ~ Bin(round(g_hat_i), p_alpha)`` with
   ``p = 1 - S(t + dt) / S(t)`` (``S = 1 - schedule``; ``round`` stochastic, mean-preserving, or to the
   nearest integer with ``gap_rounding="nearest"``), and the last
   inserting step takes ``p_alpha = 1``, so a slot's whole predicted gap is inserted by the end (Euler
   Poisson steps stop at ``t = (N - 1) / N`` and leave each token missing with chance ``~1 / N``);
4. the last step fills every remaining MASK and inserts nothing.

The rates come from the model's own schedules (``model.unmask_schedule``, ``model.insertion_schedule``),
evaluated at ``t <= (N - 1) / N`` only, where every schedule's ``kappa`` is finite: the last step, not a
divergent rate, takes care of what is left at ``t -> 1``.
Only slots between the given segments are eligible (the prompt, or a prefix and a suffix, or any number
of anchored spans: :func:`infill`), so a given token never changes and never moves relative to its
segment, and a clean token never changes again. MASK, PAD, EOS and the config's
``suppress_tokens`` are never emitted. All randomness is counter-based (:mod:`.randomness`), so each row
gets the same result in any batch. Host syncs per step: the MASK positions (``nonzero``, also inside the
model's ``logits_positions`` gather) and the longest new row, which sizes the next canvas.

This module holds the entry points and the step loop; one step (unmask, then insert) is
:func:`~flexretrofit.sampling.flex_steps.flex_step`.

The model is anything with ``model(input_ids, t, attention_mask, logits_positions=...)`` returning
``logits`` and ``expected_gaps`` (:class:`~flexretrofit.models.FlexMDMForMaskedDiffusion`), a
``config`` with ``mask_token_id``, ``pad_token_id``, ``eos_token_id`` and ``max_length``, and the
``insertion_schedule`` / ``unmask_schedule`` properties.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flexretrofit.sampling.config import FlexGenerationConfig, resolve_generation_config
from flexretrofit.sampling.flex_steps import (
    StepSetup,
    canvas_width,
    flex_step,
    forbidden_token_ids,
    step_probability,
    step_rates,
)
from flexretrofit.sampling.randomness import row_seeds
from flexretrofit.sampling.sequences import (
    GenerationOutput,
    GenerationStep,
    TokenRows,
    check_rows_have_tokens,
    check_token_ids,
    empty_output,
    has_insertion_head,
    infill_rows,
    pad_rows,
    prompt_rows,
)
from flexretrofit.utils import model_device

# Public here before the step and the shared checks had their own modules.
__all__ = [
    "check_token_ids",
    "empty_output",
    "forbidden_token_ids",
    "generate_flex",
    "infill",
    "model_device",
    "require_flexmdm",
    "step_probability",
]


def generate_flex(
    model: nn.Module,
    input_ids: TokenRows,
    attention_mask: Tensor | None = None,
    generation_config: FlexGenerationConfig | None = None,
    **kwargs,
) -> GenerationOutput:
    """Generate a response of model-chosen length after each prompt.

    Args:
        model: a FlexMDM (see the module docstring for what is used).
        input_ids: prompts: ``[B, L]`` tensor (padding marked by ``attention_mask``, either side), or a
            list of id lists/tensors of different lengths.
        attention_mask: ``[B, L]``, 1 at real prompt tokens; None = all real.
        generation_config: a :class:`FlexGenerationConfig`; None = ``model.generation_config`` (the one saved
            with the model), or the defaults.
        **kwargs: override config fields for this call (``steps=64``, ``temperature=0.7``, ...), plus
            ``generator``: a ``torch.Generator`` from which the base seed is drawn instead of ``config.seed``.

    Returns:
        :class:`GenerationOutput`: ``sequences [B, L']`` = prompt + response, ``lengths`` (prompt + response:
        the response length the model chose is ``lengths - prompt_lengths``), ``prompt_lengths``, and the
        ``trace`` when ``return_trace`` is set.

    An empty batch (``[]``, a ``[0, L]`` tensor) gives an empty output (``sequences`` ``[0, 0]``).

    Raises:
        TypeError: on a model without an insertion head (a LLaDA: use ``generate_mdm``), or text prompts.
        ValueError: on an empty prompt, a prompt longer than the cap, a prompt holding the MASK id or an id
            outside the vocabulary, or an invalid config.
    """
    require_flexmdm(model, "generate_flex", "generate_mdm")
    generator = kwargs.pop("generator", None)
    config = resolve_generation_config(generation_config, FlexGenerationConfig, kwargs, model)
    prompts = prompt_rows(input_ids, attention_mask)
    output, _ = _sample(model, [[prompt, prompt.new_empty(0)] for prompt in prompts], config, generator)
    return output


def infill(
    model: nn.Module,
    prefix_ids: TokenRows | None = None,
    suffix_ids: TokenRows | None = None,
    generation_config: FlexGenerationConfig | None = None,
    *,
    segments: Sequence[Sequence[Sequence[int] | Tensor]] | None = None,
    **kwargs,
) -> GenerationOutput:
    """Anchored infilling: keep given segments in place and in order, and generate only between them.

    Two spellings, one sampler:

    - ``infill(model, prefix_ids, suffix_ids)``: one middle per row between a prefix and a suffix;
    - ``infill(model, segments=rows)``: ``rows[b]`` is a list of two or more token-id sequences
      ``[seg_0, seg_1, ..., seg_k]``; the model inserts a gap of its own length between each consecutive
      pair, so ``sequences[b][:lengths[b]]`` is ``seg_0 + gap_1 + seg_1 + ... + gap_k + seg_k``. Rows may
      have different numbers of segments. ``seg_0`` (a prompt or prefix) and ``seg_k`` may be empty; an
      inner segment may not (two gaps side by side are one gap).

    Generation starts from the concatenated segments at ``t = 0``: a slot is eligible for insertion only
    between two segments, never inside one, so every gap the model sizes is the local one between its two
    neighbours, and no segment token moves relative to its segment or changes.

    Args:
        prefix_ids / suffix_ids: one row each per example (lists of ids or 1-D tensors; either may be empty,
            not both).
        segments: instead of prefix/suffix: per row, the list of segments (lists of ids or 1-D tensors).
        generation_config, **kwargs: as for :func:`generate_flex`.

    Returns:
        :class:`GenerationOutput` with ``sequences [B, L']`` (segments and gaps interleaved),
        ``prompt_lengths`` (``len(seg_0)``), ``suffix_lengths`` (``len(seg_k)``) and ``middles``: for
        prefix/suffix, each row's middle (token ids); for ``segments``, each row's list of gaps
        ``[gap_1, ..., gap_k]``.

    Raises:
        ValueError: both spellings or neither, fewer than two segments, an empty inner segment, a row with
            no token at all, a MASK id or an id outside the vocabulary in a segment, or more segment tokens
            than the length cap.
    """
    require_flexmdm(model, "infill", "infill_mdm")
    generator = kwargs.pop("generator", None)
    config = resolve_generation_config(generation_config, FlexGenerationConfig, kwargs, model)
    if segments is not None:
        if prefix_ids is not None or suffix_ids is not None:
            raise ValueError("pass either prefix_ids and suffix_ids, or segments=, not both.")
        rows = _segment_rows(segments)
    else:
        if prefix_ids is None or suffix_ids is None:
            raise ValueError(
                "infill needs prefix_ids and suffix_ids, or segments=[[seg_0, seg_1, ...], ...]."
            )
        rows = infill_rows(prefix_ids, suffix_ids)
    check_rows_have_tokens(rows, "generate_flex")
    output, regions = _sample(model, rows, config, generator)
    gaps = _gaps(output, regions, [len(row) - 1 for row in rows])
    output.middles = gaps if segments is not None else [row_gaps[0] for row_gaps in gaps]
    return output


def _segment_rows(segments: Sequence[Sequence[Sequence[int] | Tensor]]) -> list[list[Tensor]]:
    """``segments`` as one list of 1-D id tensors per row, checked (see :func:`infill`)."""
    if torch.is_tensor(segments) or isinstance(segments, (str, bytes)) or not isinstance(segments, Sequence):
        raise ValueError(
            "segments must be a list with one entry per row, each a list of token-id sequences "
            "[[seg_0, seg_1, ...], ...]."
        )
    rows = []
    for b, row in enumerate(segments):
        if torch.is_tensor(row) or not isinstance(row, Sequence) or len(row) < 2:
            raise ValueError(
                f"segments[{b}] must be a list of two or more token-id sequences (the given spans, in order); "
                "wrap a single prompt as [prompt, []] or use generate_flex."
            )
        row_tensors = []
        for s, segment in enumerate(row):
            if isinstance(segment, (str, bytes)):
                raise ValueError(
                    f"segments[{b}][{s}] is text; tokenize it first (tokenizer(...)['input_ids'])."
                )
            ids = torch.as_tensor(segment, dtype=torch.long).reshape(-1)
            if len(ids) == 0 and 0 < s < len(row) - 1:
                raise ValueError(
                    f"segments[{b}][{s}] is empty; only the first and last segment may be empty (two gaps with "
                    "nothing between them are one gap: drop the empty segment)."
                )
            row_tensors.append(ids)
        rows.append(row_tensors)
    return rows


def _gaps(output: GenerationOutput, regions: Tensor, num_gaps: list[int]) -> list[list[list[int]]]:
    """Each row's generated gaps ``[gap_1, ..., gap_k]`` by position: tokens of region ``2j - 1`` form gap j."""
    sequences, regions = output.sequences.tolist(), regions.tolist()
    gaps = []
    for row, row_regions, length, count in zip(sequences, regions, output.lengths.tolist(), num_gaps):
        row_gaps: list[list[int]] = [[] for _ in range(count)]
        for token, region in zip(row[:length], row_regions[:length]):
            if region % 2 == 1:
                row_gaps[region // 2].append(token)
        gaps.append(row_gaps)
    return gaps


def require_flexmdm(model: nn.Module, sampler: str, fixed_length_sampler: str) -> None:
    """Raise a TypeError naming the fixed-length sampler when ``model`` has no insertion head or schedules."""
    if has_insertion_head(model):
        return
    raise TypeError(
        f"{sampler} needs a FlexMDM (a model with an insertion head), got {type(model).__name__}; sample a "
        f"fixed-length LLaDA model with flexretrofit.sampling.{fixed_length_sampler} (or model.generate), or "
        "retrofit it first with FlexMDMForMaskedDiffusion.from_llada(model)"
    )


def _sample(
    model: nn.Module,
    segments: list[list[Tensor]],
    config: FlexGenerationConfig,
    generator: torch.Generator | None,
) -> tuple[GenerationOutput, Tensor]:
    """Run the sampler from the given segments of each row; returns the output and the final regions ``[B, L']``
    (see :class:`~.flex_steps.StepSetup`). Generating after a prompt is the segments ``[prompt, []]``."""
    model_config = model.config
    device = model_device(model)
    model_cap = int(model_config.max_length)
    cap = model_cap if config.max_length is None else int(config.max_length)
    if cap > model_cap:
        raise ValueError(
            f"max_length={cap} is above the model's limit model.config.max_length={model_cap}; "
            f"use max_length <= {model_cap}."
        )
    mask_id, pad_id = model_config.mask_token_id, model_config.pad_token_id
    rows = [torch.cat(row) for row in segments]
    if not rows:
        return empty_output(device, config.return_trace), torch.zeros(0, 0, dtype=torch.long, device=device)
    check_token_ids(rows, model_config)
    for b, row in enumerate(rows):
        if len(row) > cap:
            raise ValueError(
                f"row {b} starts with {len(row)} given tokens, above the length cap max_length={cap}; "
                "shorten the prompt or raise max_length."
            )
        if bool((row == mask_id).any()):
            raise ValueError(
                f"row {b} holds the MASK id {mask_id} in its prompt; prompts are never changed, so remove it "
                "(to fill a gap, use infill with the text before and after it)."
            )
    base_seed = config.seed
    if generator is not None:
        base_seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    setup = StepSetup(
        mask_id=mask_id,
        pad_id=pad_id,
        cap=cap,
        seeds=row_seeds(base_seed, config.row_seeds, len(rows), device),
        last_region=torch.tensor([2 * (len(row) - 1) for row in segments], dtype=torch.long, device=device),
        forbidden=torch.tensor(
            forbidden_token_ids(model_config, config.suppress_tokens), dtype=torch.long, device=device
        ),
    )
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = canvas_width(int(lengths.max()), cap, config)
    ids, lengths = pad_rows(rows, pad_id, width, device)
    region_rows = [
        torch.cat([torch.full((len(segment),), 2 * s, dtype=torch.long) for s, segment in enumerate(row)])
        for row in segments
    ]
    regions, _ = pad_rows(region_rows, 0, width, device)
    trace = [GenerationStep(0, 0.0, ids.cpu(), lengths.cpu())] if config.return_trace else None

    insertion_schedule, unmask_schedule = model.insertion_schedule, model.unmask_schedule
    steps = config.steps
    with torch.no_grad():
        for k in range(steps):
            rates = step_rates(k, steps, unmask_schedule, insertion_schedule, config)
            ids, lengths, regions, record = flex_step(
                model, ids, lengths, regions, k, k / steps, rates, setup, config
            )
            if trace is not None:
                trace.append(record)

    width = int(lengths.max())
    output = GenerationOutput(
        sequences=ids[:, :width],
        lengths=lengths,
        prompt_lengths=torch.tensor([len(row[0]) for row in segments], dtype=torch.long, device=device),
        suffix_lengths=torch.tensor([len(row[-1]) for row in segments], dtype=torch.long, device=device),
        trace=trace,
    )
    return output, regions[:, :width]
