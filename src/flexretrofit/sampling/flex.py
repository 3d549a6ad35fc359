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

The model is anything with ``model(input_ids, t, attention_mask, logits_positions=...)`` returning
``logits`` and ``expected_gaps`` (:class:`~flexretrofit.models.FlexMDMForMaskedDiffusion`), a
``config`` with ``mask_token_id``, ``pad_token_id``, ``eos_token_id`` and ``max_length``, and the
``insertion_schedule`` / ``unmask_schedule`` properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flexretrofit.diffusion.schedules import Schedule
from flexretrofit.sampling.config import FlexGenerationConfig, resolve_generation_config
from flexretrofit.sampling.randomness import (
    STREAM_INSERTION,
    STREAM_ROUNDING,
    STREAM_TOKEN,
    STREAM_UNMASK_COUNT,
    binomial_inverse_cdf,
    categorical_inverse_cdf,
    counter_uniform,
    poisson_inverse_cdf,
    row_seeds,
)
from flexretrofit.sampling.sequences import (
    GenerationOutput,
    GenerationStep,
    TokenRows,
    as_token_rows,
    pad_rows,
)


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
    prompts = as_token_rows(input_ids, attention_mask)
    for b, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(
                f"prompt {b} is empty; give every row at least one token (e.g. the BOS id) to generate from."
            )
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
        prefixes = as_token_rows(prefix_ids, name="prefix_ids")
        suffixes = as_token_rows(suffix_ids, name="suffix_ids")
        if len(prefixes) != len(suffixes):
            raise ValueError(f"got {len(prefixes)} prefixes and {len(suffixes)} suffixes; they must pair up.")
        rows = [[prefix, suffix] for prefix, suffix in zip(prefixes, suffixes)]
    for b, row in enumerate(rows):
        if sum(len(segment) for segment in row) == 0:
            raise ValueError(
                f"row {b} has no token: an empty prefix and an empty suffix (or only empty segments); "
                "use generate_flex with a prompt."
            )
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
    if hasattr(model, "insertion_schedule") and hasattr(model, "unmask_schedule"):
        return
    raise TypeError(
        f"{sampler} needs a FlexMDM (a model with an insertion head), got {type(model).__name__}; sample a "
        f"fixed-length LLaDA model with flexretrofit.sampling.{fixed_length_sampler} (or model.generate), or "
        "retrofit it first with FlexMDMForMaskedDiffusion.from_llada(model)"
    )


@dataclass
class _Setup:
    """What stays fixed during one sampling run.

    Every token carries a *region* (``[B, W]`` long, moved along with it): ``2s`` for a token of segment
    ``s``, ``2j - 1`` for a token generated in gap ``j`` (between segments ``j - 1`` and ``j``). Regions never
    decrease along a row; ``last_region`` (``[B]``, ``2k`` for ``k`` gaps) stands in right of the last token.
    """

    mask_id: int
    pad_id: int
    cap: int
    seeds: Tensor  # [B]
    last_region: Tensor  # [B]
    forbidden: Tensor  # [n] token ids never emitted


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


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


def forbidden_token_ids(model_config, extra: list[int] | None, vocab: int | None = None) -> list[int]:
    """MASK, PAD, EOS (all of ``eos_token_id`` if a list), ``extra`` and any embedding padding beyond ``vocab``."""
    ids = {model_config.mask_token_id, model_config.pad_token_id}
    eos = getattr(model_config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    ids.update(extra or [])
    backbone = getattr(model_config, "backbone_config", model_config)
    vocab_size, embedding_size = (
        getattr(backbone, "vocab_size", None),
        getattr(backbone, "embedding_size", None),
    )
    if vocab_size is not None and embedding_size is not None:
        ids.update(range(vocab_size, embedding_size))
    return sorted(i for i in ids if i is not None)


def _sample(
    model: nn.Module,
    segments: list[list[Tensor]],
    config: FlexGenerationConfig,
    generator: torch.Generator | None,
) -> tuple[GenerationOutput, Tensor]:
    """Run the sampler from the given segments of each row; returns the output and the final regions ``[B, L']``
    (see :class:`_Setup`). Generating after a prompt is the segments ``[prompt, []]``."""
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
    setup = _Setup(
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
    width = _canvas_width(int(lengths.max()), cap, config)
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
            t = k / steps
            rates = None
            if k < steps - 1 and config.count_distribution == "binomial":
                # Exact per-step probabilities; the last inserting step takes every slot's remaining count.
                rates = (
                    step_probability(unmask_schedule, t, (k + 1) / steps),
                    1.0 if k == steps - 2 else step_probability(insertion_schedule, t, (k + 1) / steps),
                )
            elif k < steps - 1:
                t64 = torch.tensor(t, dtype=torch.float64)
                rates = (
                    float(unmask_schedule.rate(t64)) / steps,
                    float(insertion_schedule.rate(t64)) / steps,
                )
            ids, lengths, regions, record = _step(model, ids, lengths, regions, k, t, rates, setup, config)
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


def step_probability(schedule: Schedule, t: float, t_next: float) -> float:
    """Chance that an event still pending at ``t`` happens by ``t_next``: ``1 - S(t_next) / S(t)``, ``S = 1 - s``."""
    survival = schedule.survival(torch.tensor([t, t_next], dtype=torch.float64))
    if float(survival[0]) <= 0.0:
        return 1.0
    return float((1.0 - survival[1] / survival[0]).clamp(0.0, 1.0))


def _canvas_width(longest: int, cap: int, config: FlexGenerationConfig) -> int:
    """Width of the next step's canvas: the longest row rounded up to the bucket, at most the cap."""
    if config.fixed_canvas:
        return cap
    bucket = config.bucket_size
    return min(-(-longest // bucket) * bucket, cap)


def _confidence(log_probs: Tensor, positions: Tensor, method: str) -> Tensor:
    """Ranking score per MASK position (higher = unmasked first). log_probs ``[N, V]``, positions ``[N]`` -> ``[N]``."""
    if method == "position":
        return -positions.double()
    probs = log_probs.exp()
    if method == "top_prob":
        return probs.max(dim=-1).values.double()
    if method == "prob_diff":
        top2 = probs.topk(2, dim=-1).values
        return (top2[:, 0] - top2[:, 1]).double()
    # entropy: lower entropy = more confident; xlogy keeps suppressed tokens (p = 0) at 0.
    return torch.special.xlogy(probs, probs).sum(dim=-1).double()


def _step(
    model: nn.Module,
    ids: Tensor,
    lengths: Tensor,
    regions: Tensor,
    k: int,
    t: float,
    rates: tuple[float, float] | None,
    setup: _Setup,
    config: FlexGenerationConfig,
) -> tuple[Tensor, Tensor, GenerationStep | None]:
    """One sampler step. ids ``[B, W]``, lengths ``[B]``, regions ``[B, W]`` -> the next (ids ``[B, W']``,
    lengths ``[B]``, regions ``[B, W']``, trace entry).

    ``rates`` = (``kappa_beta(t) dt``, ``kappa_alpha(t) dt``) for Poisson counts, or the two step probabilities
    for binomial counts (``config.count_distribution``), or None on the last step (fill all, no insertion).
    """
    batch, width = ids.shape
    device = ids.device
    positions = torch.arange(width, device=device)
    valid = positions[None] < lengths[:, None]  # [B, W]
    is_mask = (ids == setup.mask_id) & valid  # [B, W]
    flat_index = is_mask.flatten().nonzero().squeeze(1)  # [N] row-major, as the model orders its logits
    mask_position = flat_index % width  # [N]
    mask_seed = setup.seeds[flat_index // width]  # [N]

    t_rows = torch.full((batch,), t, device=device)
    if config.full_softmax:
        out = model(ids, t_rows, valid)
        logits = out.logits.float().index_fill(-1, setup.forbidden, float("-inf"))  # [B, W, V]
        log_probs = torch.log_softmax(logits, dim=-1)[is_mask]  # [N, V]
    else:
        out = model(ids, t_rows, valid, logits_positions=is_mask)
        logits = out.logits.float().index_fill(-1, setup.forbidden, float("-inf"))  # [N, V]
        log_probs = torch.log_softmax(logits, dim=-1)

    # Candidate token at every MASK position; only the selected ones are written.
    if config.temperature > 0:
        tempered = torch.softmax(log_probs / config.temperature, dim=-1)
        uniform = counter_uniform(mask_seed, k, STREAM_TOKEN, mask_position)
        candidates = categorical_inverse_cdf(tempered, uniform)
    else:
        candidates = log_probs.argmax(dim=-1)
    filled = ids.flatten().index_copy(0, flat_index, candidates).view(batch, width)

    if rates is None:
        select = is_mask
    else:
        select = _select_unmask(is_mask, log_probs, flat_index, mask_position, k, rates[0], setup, config)
    new_ids = torch.where(select, filled, ids)

    if rates is None:
        record = None
        if config.return_trace:
            moved = torch.where(valid, positions[None], -1)
            nothing = torch.zeros_like(select)
            record = GenerationStep(
                k + 1, t, new_ids.cpu(), lengths.cpu(), moved.cpu(), select.cpu(), nothing.cpu()
            )
        return new_ids, lengths, regions, record
    return _insert(new_ids, lengths, regions, valid, select, out.expected_gaps, k, t, rates[1], setup, config)


def _select_unmask(
    is_mask: Tensor,
    log_probs: Tensor,
    flat_index: Tensor,
    mask_position: Tensor,
    k: int,
    unmask_rate: float,
    setup: _Setup,
    config: FlexGenerationConfig,
) -> Tensor:
    """The MASK positions to unmask this step, ``[B, W]`` bool (``K`` per row, the most confident eligible)."""
    batch, width = is_mask.shape
    num_masks = is_mask.sum(dim=1)  # [B]
    uniform = counter_uniform(setup.seeds, k, STREAM_UNMASK_COUNT, torch.zeros_like(setup.seeds))
    if config.count_distribution == "binomial":  # unmask_rate is the step probability of each MASK
        count = binomial_inverse_cdf(num_masks, unmask_rate, uniform)  # [B]
    else:
        count = torch.minimum(poisson_inverse_cdf(num_masks * unmask_rate, uniform), num_masks)  # [B]

    eligible = is_mask
    if config.sliding_window:
        window = torch.floor(config.window_scale * count.double()).long().clamp(max=config.max_window)
        window = torch.maximum(window, count)
        mask_rank = is_mask.long().cumsum(dim=1) - 1  # how many MASKs lie to the left
        eligible = is_mask & (mask_rank < window[:, None])

    confidence = _confidence(log_probs, mask_position, config.confidence)
    scores = torch.full((batch * width,), float("-inf"), dtype=torch.float64, device=is_mask.device)
    scores = scores.index_copy(0, flat_index, confidence).view(batch, width)
    scores = scores.masked_fill(~eligible, float("-inf"))
    # Rank within each row (ties: leftmost first); select the top `count` eligible positions.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(width, device=order.device).expand(batch, -1)
    )
    return eligible & (rank < count[:, None])


def _insert(
    ids: Tensor,
    lengths: Tensor,
    regions: Tensor,
    valid: Tensor,
    unmasked: Tensor,
    expected_gaps: Tensor,
    k: int,
    t: float,
    insertion_rate: float,
    setup: _Setup,
    config: FlexGenerationConfig,
) -> tuple[Tensor, Tensor, GenerationStep | None]:
    """Insert MASKs at eligible slots. ids ``[B, W]``, regions ``[B, W]``, expected_gaps ``[B, W+1]``.

    Slot ``i`` sits between tokens ``i - 1`` and ``i``; it is eligible when it lies in a gap: its left and
    right regions differ (a segment border) or the left one is a gap. Inserted MASKs join that gap.
    """
    batch, width = ids.shape
    device = ids.device
    slots = torch.arange(width + 1, device=device)
    left_region = torch.cat([regions.new_zeros(batch, 1), regions], dim=1)  # [B, W+1]; slot 0: segment 0
    right_region = torch.cat([regions, regions.new_zeros(batch, 1)], dim=1)
    right_region = torch.where(slots[None] < lengths[:, None], right_region, setup.last_region[:, None])
    eligible = (slots[None] <= lengths[:, None]) & (
        (left_region != right_region) | (left_region % 2 == 1)
    )  # [B, W+1]
    uniform = counter_uniform(setup.seeds[:, None], k, STREAM_INSERTION, slots[None])
    if config.count_distribution == "binomial":
        # Each of a slot's missing tokens arrives with the step probability; the count is g_hat rounded
        # stochastically (mean g_hat), exact when the model is sure of an integer gap.
        gaps = expected_gaps.double()
        if config.gap_rounding == "nearest":
            remaining = torch.floor(gaps + 0.5)
        else:
            frac = counter_uniform(setup.seeds[:, None], k, STREAM_ROUNDING, slots[None])
            remaining = torch.floor(gaps) + (frac < gaps - torch.floor(gaps)).double()
        counts = binomial_inverse_cdf(remaining.long(), insertion_rate, uniform) * eligible
    else:
        counts = poisson_inverse_cdf(expected_gaps.double() * insertion_rate, uniform) * eligible
    # Truncate slot by slot from the left: each slot keeps what still fits under the cap.
    room = (setup.cap - lengths)[:, None]
    before = counts.cumsum(dim=1) - counts
    counts = torch.minimum(counts, (room - before).clamp(min=0))

    shift = counts.cumsum(dim=1)[:, :width]  # insertions at slots 0..j all land before token j
    new_lengths = lengths + counts.sum(dim=1)
    new_width = _canvas_width(int(new_lengths.max()), setup.cap, config)  # host sync: sizes the next canvas
    moved_to = torch.where(valid, slots[None, :width] + shift, new_width)  # padding -> a spare column
    new_positions = torch.arange(new_width + 1, device=device)
    new_ids = torch.where(new_positions[None] < new_lengths[:, None], setup.mask_id, setup.pad_id)
    new_ids = new_ids.scatter(1, moved_to, ids)[:, :new_width]
    kept = torch.zeros(batch, new_width + 1, dtype=torch.bool, device=device)
    kept = kept.scatter(1, moved_to, valid)[:, :new_width]
    # A kept token keeps its region; an inserted MASK joins the gap right of the last kept token before it.
    kept_regions = regions.new_zeros(batch, new_width + 1).scatter(1, moved_to, regions)[:, :new_width]
    left_of_inserted = torch.where(kept, kept_regions, 0).cummax(dim=1).values
    new_regions = torch.where(kept, kept_regions, left_of_inserted | 1)

    record = None
    if config.return_trace:
        inserted = (new_positions[None, :new_width] < new_lengths[:, None]) & ~kept
        record = GenerationStep(
            k + 1,
            t,
            new_ids.cpu(),
            new_lengths.cpu(),
            torch.where(valid, moved_to, -1).cpu(),
            unmasked.cpu(),
            inserted.cpu(),
        )
    return new_ids, new_lengths, new_regions, record
