"""One step of the flexible-length sampler (:mod:`.flex`): unmask the most confident MASKs, then insert MASKs.

:func:`flex_step` takes the canvas ``ids [B, W]`` with its ``lengths [B]`` and ``regions [B, W]`` (which segment
or gap each token belongs to, see :class:`StepSetup`) and returns the next canvas, ``[B, W']``:

1. one forward pass, token logits only at the MASKs (suppressed ids at -inf);
2. :func:`_select_unmask`: ``K`` per row (Poisson or binomial, see :func:`step_rates`), the most confident
   eligible MASKs, take their candidate tokens;
3. :func:`_insert`: each eligible slot gets ``e_i`` new MASKs from the predicted gaps, slot by slot from the
   left until the length cap; the canvas is re-laid out (``canvas_width``).

All randomness is counter-based (:mod:`.randomness`): each draw depends on the row's seed, the step and the
position, never on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flexretrofit.diffusion.schedules import Schedule
from flexretrofit.sampling.config import FlexGenerationConfig
from flexretrofit.sampling.randomness import (
    STREAM_INSERTION,
    STREAM_ROUNDING,
    STREAM_TOKEN,
    STREAM_UNMASK_COUNT,
    binomial_inverse_cdf,
    categorical_inverse_cdf,
    counter_uniform,
    poisson_inverse_cdf,
)
from flexretrofit.sampling.sequences import GenerationStep


@dataclass
class StepSetup:
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


def step_rates(
    k: int, steps: int, unmask_schedule: Schedule, insertion_schedule: Schedule, config: FlexGenerationConfig
) -> tuple[float, float] | None:
    """What step ``k`` of ``steps`` draws its counts with: (unmask, insertion) per-step Poisson rates
    ``kappa(t) dt``, or with ``count_distribution="binomial"`` the step probabilities; None on the last step
    (fill every MASK, insert nothing)."""
    t = k / steps
    if k == steps - 1:
        return None
    if config.count_distribution == "binomial":
        # Exact per-step probabilities; the last inserting step takes every slot's remaining count.
        return (
            step_probability(unmask_schedule, t, (k + 1) / steps),
            1.0 if k == steps - 2 else step_probability(insertion_schedule, t, (k + 1) / steps),
        )
    t64 = torch.tensor(t, dtype=torch.float64)
    return float(unmask_schedule.rate(t64)) / steps, float(insertion_schedule.rate(t64)) / steps


def step_probability(schedule: Schedule, t: float, t_next: float) -> float:
    """Chance that an event still pending at ``t`` happens by ``t_next``: ``1 - S(t_next) / S(t)``, ``S = 1 - s``."""
    survival = schedule.survival(torch.tensor([t, t_next], dtype=torch.float64))
    if float(survival[0]) <= 0.0:
        return 1.0
    return float((1.0 - survival[1] / survival[0]).clamp(0.0, 1.0))


def canvas_width(longest: int, cap: int, config: FlexGenerationConfig) -> int:
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


def flex_step(
    model: nn.Module,
    ids: Tensor,
    lengths: Tensor,
    regions: Tensor,
    k: int,
    t: float,
    rates: tuple[float, float] | None,
    setup: StepSetup,
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
    setup: StepSetup,
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
    setup: StepSetup,
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
    new_width = canvas_width(int(new_lengths.max()), setup.cap, config)  # host sync: sizes the next canvas
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
