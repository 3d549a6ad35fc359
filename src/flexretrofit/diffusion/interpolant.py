"""The FlexMDM joint interpolant: draw ``x_t`` (tokens inserted, some still MASK) from a clean ``x1``.

Per non-prompt token, independently: an insertion time ``T1 = alpha^-1(U)`` and an unmasking time drawn
from ``beta`` truncated to ``[T1, 1]``, ``T2 = beta^-1(beta(T1) + U' (1 - beta(T1)))`` (right for any
``beta``). At time ``t`` the token is absent if ``t < T1``, MASK if ``T1 <= t < T2`` and clean if
``t >= T2``. Prompt tokens are always present and clean. ``x_t`` keeps the present tokens in order,
left-compacted; the slot gaps count the absent tokens between them (what the insertion head predicts).

The forward process of one training batch, in order: :func:`stratified_times` (the rows' times, one grid over
the global batch), :func:`sample_interpolant` (``x_t`` and its targets), :func:`masked_positions_and_targets`
(where the model needs logits, and what they should predict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexretrofit.diffusion.schedules import Schedule, build_schedule
from flexretrofit.utils import check_rank

# Target id at positions that are not MASK (the default ignore_index of torch's cross entropy).
IGNORE_INDEX = -100


@dataclass
class InterpolantSample:
    """One draw of the joint interpolant for a batch; ``L`` is the width of ``x1``.

    Attributes:
        xt: ``[B, L]`` present tokens left-compacted (clean id, or the mask id), pad id after.
        xt_attention_mask: ``[B, L]`` bool, True at the ``lengths[b]`` real positions of ``xt``.
        lengths: ``[B]`` long, ``len(x_t)`` per row.
        source_index: ``[B, L]`` long, column of ``x1`` that ``xt[b, j]`` came from; -1 at padding.
        is_masked: ``[B, L]`` bool, True where ``xt`` is MASK.
        targets: ``[B, L]`` long, the clean ``x1`` token where ``is_masked``, -100 elsewhere.
        slot_gaps: ``[B, L+1]`` long, tokens of ``x1`` deleted just before ``xt[b, i]`` (slot ``lengths[b]``:
            after the last token); 0 at invalid slots.
        slot_valid: ``[B, L+1]`` bool, True for slots ``0..lengths[b]``.
        non_prompt_lengths: ``[B]`` long, non-prompt real tokens of ``x1`` per row (what the loss
            normalises by; it does not depend on ``t`` or on padding).
    """

    xt: Tensor
    xt_attention_mask: Tensor
    lengths: Tensor
    source_index: Tensor
    is_masked: Tensor
    targets: Tensor
    slot_gaps: Tensor
    slot_valid: Tensor
    non_prompt_lengths: Tensor


def _check_inputs(x1: Tensor, x1_attention_mask: Tensor, prompt_mask: Tensor, t: Tensor) -> None:
    if x1.dim() != 2:
        raise ValueError(f"x1 must be [B, L] token ids, got shape {tuple(x1.shape)}.")
    for name, mask in (("x1_attention_mask", x1_attention_mask), ("prompt_mask", prompt_mask)):
        if mask.shape != x1.shape:
            raise ValueError(f"{name} must have x1's shape {tuple(x1.shape)}, got {tuple(mask.shape)}.")
    if t.shape != x1.shape[:1]:
        raise ValueError(f"t must be [B] = {tuple(x1.shape[:1])} (or a float), got shape {tuple(t.shape)}.")
    if bool((prompt_mask & ~x1_attention_mask).any()):
        raise ValueError("prompt_mask is True at padding; a prompt token must also be a real token of x1.")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"t must lie in [0, 1], got values in [{t.min().item()}, {t.max().item()}].")


def _uniforms(batch_size: int, width: int, device: torch.device, generator: torch.Generator | None):
    """Two ``[B, L]`` uniform draws (for ``T1`` and ``T2``), laid out position-major.

    Drawing ``[L, 2, B]`` puts the numbers for column ``j`` before those of column ``j + 1``, so on a
    sequential generator (CPU) extra right-padding columns only append draws: the same generator state
    gives the same sample whatever the padding width.
    """
    draw_device = generator.device if generator is not None else device
    u = torch.rand(width, 2, batch_size, generator=generator, device=draw_device).to(device)
    return u[:, 0, :].T, u[:, 1, :].T


def sample_interpolant(
    x1: Tensor,
    x1_attention_mask: Tensor,
    prompt_mask: Tensor,
    t: Tensor | float,
    insertion_schedule: Schedule | str | dict,
    unmask_schedule: Schedule | str | dict,
    mask_token_id: int,
    pad_token_id: int,
    generator: torch.Generator | None = None,
) -> InterpolantSample:
    """Draw ``x_t`` from the joint interpolant at time ``t``, with its MASK targets and slot gaps.

    Args:
        x1: ``[B, L]`` long, clean token ids, right-padded.
        x1_attention_mask: ``[B, L]`` bool, True at real tokens of ``x1``.
        prompt_mask: ``[B, L]`` bool, True at prompt tokens (never deleted, never masked; any positions,
            e.g. prefix and suffix around an infilled middle).
        t: ``[B]`` float in [0, 1] (or one float for every row); 0 = prompt only, 1 = clean.
        insertion_schedule / unmask_schedule: ``alpha`` and ``beta`` (a :class:`Schedule` or a spec for
            :func:`build_schedule`).
        mask_token_id / pad_token_id: ids written at MASK and padding positions of ``xt``.
        generator: optional random generator. On CPU, right-padding ``x1`` with more columns gives the
            identical sample for the same generator state; elsewhere it gives the same distribution.

    Returns:
        :class:`InterpolantSample` of width ``L`` (slot tensors ``L + 1``).

    With a geometric ``alpha`` (``alpha(0) > 0``, ``alpha(1) < 1``) the insertion time has atoms at 0
    and 1, so at ``t = 1`` every token is present and clean, as for any schedule.
    """
    device = x1.device
    x1_attention_mask = x1_attention_mask.to(device=device, dtype=torch.bool)
    prompt_mask = prompt_mask.to(device=device, dtype=torch.bool)
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point() or torch.finfo(t.dtype).bits < 32:
        t = t.to(torch.float32)
    if t.dim() == 0:
        t = t.expand(x1.shape[0])
    _check_inputs(x1, x1_attention_mask, prompt_mask, t)
    alpha, beta = build_schedule(insertion_schedule), build_schedule(unmask_schedule)
    batch_size, width = x1.shape

    # Event times per position of x1.
    u_insert, u_unmask = _uniforms(batch_size, width, device, generator)
    u_insert, u_unmask = u_insert.to(t.dtype), u_unmask.to(t.dtype)
    insert_time = alpha.inverse(u_insert)
    beta_at_insert = beta.value(insert_time)
    unmask_time = beta.inverse(beta_at_insert + u_unmask * (1.0 - beta_at_insert))
    unmask_time = torch.maximum(unmask_time, insert_time)  # rounding in inverse(value(.)) must not reorder

    # State of every x1 position at time t.
    now = t[:, None]
    present = x1_attention_mask & (prompt_mask | (now >= insert_time))
    masked = present & ~prompt_mask & (now < unmask_time)

    # Left-compact the present tokens; a stable sort on "absent" keeps their order.
    order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices  # [B, L]
    lengths = present.sum(dim=1)
    positions = torch.arange(width, device=device)
    xt_attention_mask = positions[None, :] < lengths[:, None]
    source_index = torch.where(xt_attention_mask, order, -1)
    tokens = x1.gather(1, order)
    is_masked = masked.gather(1, order) & xt_attention_mask
    xt = torch.where(is_masked, torch.full_like(tokens, mask_token_id), tokens)
    xt = torch.where(xt_attention_mask, xt, torch.full_like(tokens, pad_token_id))
    targets = torch.where(is_masked, tokens, torch.full_like(tokens, IGNORE_INDEX))

    # Slot gaps from ranks among real tokens (s_{-1} = -1, s_l = n_b), so they count real tokens only.
    real_rank = x1_attention_mask.long().cumsum(dim=1) - 1  # [B, L]
    num_real = x1_attention_mask.sum(dim=1)  # [B]
    slots = torch.arange(width + 1, device=device)[None, :]
    slot_valid = slots <= lengths[:, None]
    # Rank of the token each slot sits before; n_b for the end slot (and the invalid ones after it).
    rank_after = torch.cat([real_rank.gather(1, order), num_real[:, None]], dim=1)  # [B, L+1]
    rank_after = torch.where(slots < lengths[:, None], rank_after, num_real[:, None])
    rank_before = torch.cat([torch.full_like(num_real[:, None], -1), rank_after[:, :-1]], dim=1)
    slot_gaps = torch.where(slot_valid, rank_after - rank_before - 1, 0)

    return InterpolantSample(
        xt=xt,
        xt_attention_mask=xt_attention_mask,
        lengths=lengths,
        source_index=source_index,
        is_masked=is_masked,
        targets=targets,
        slot_gaps=slot_gaps,
        slot_valid=slot_valid,
        non_prompt_lengths=(x1_attention_mask & ~prompt_mask).sum(dim=1),
    )


def stratified_times(
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    device: torch.device | str | None = None,
) -> Tensor:
    """Low-discrepancy diffusion times for this rank's share of the global batch -> ``[batch_size]`` float32.

    One uniform offset ``u0`` is drawn from ``generator``; the global batch of ``N = batch_size *
    world_size`` rows gets the shifted grid ``(u0 + i / N) mod 1``, where row ``j`` of rank ``r`` is
    ``i = r * batch_size + j``. Every rank must pass an identically seeded generator (same ``u0``), so
    that the union over ranks is the whole grid. Times are then mapped to ``eps + (1 - eps) t`` and
    clamped to at most ``1 - eps``, so they lie in ``[eps, 1 - eps]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    check_rank(rank, world_size)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must lie in [0, 0.5), got {eps}.")
    draw_device = generator.device if generator is not None else device
    offset = torch.rand((), generator=generator, device=draw_device, dtype=torch.float64).to(device)
    index = rank * batch_size + torch.arange(batch_size, device=device, dtype=torch.float64)
    t = torch.remainder(offset + index / (batch_size * world_size), 1.0)
    t = (eps + (1.0 - eps) * t).clamp(max=1.0 - eps)
    return t.to(torch.float32)


def masked_positions_and_targets(sample: InterpolantSample) -> tuple[Tensor, Tensor, Tensor]:
    """Where the model needs token logits, and what they should predict.

    Returns:
        logits_positions: ``[B, L]`` bool, the MASK positions of ``sample.xt`` (pass to the model).
        targets: ``[N]`` long, the clean token at each of them, in row-major order (like ``x[mask]``).
        rows: ``[N]`` long, the batch row of each.
    """
    logits_positions = sample.is_masked
    targets = sample.targets[logits_positions]
    rows = logits_positions.nonzero(as_tuple=True)[0]
    return logits_positions, targets, rows
