"""The FlexMDM training loss: weighted cross entropy at MASK tokens plus a Poisson-Bregman gap loss per slot.

``loss = (sum_{MASK j} kappa_beta(t) CE(logits_j, x1[s_t[j]])
          + sum_{valid slots i} kappa_alpha(t) D(g_i, g_hat_i)) / normalizer``

with ``D(x, y) = y - x + x (ln x - ln y)``. Both terms are minimised by the true posterior and the true
conditional mean gap, so the weights (the ELBO's rate factors) change the balance, not the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The forward-process helpers live beside the interpolant; importable from here as before.
from flexretrofit.diffusion.interpolant import masked_positions_and_targets, stratified_times
from flexretrofit.diffusion.schedules import Schedule, build_schedule

INSERTION_WEIGHTINGS = ("elbo", "constant")

__all__ = [
    "INSERTION_WEIGHTINGS",
    "FlexMDMLoss",
    "flexmdm_loss",
    "masked_positions_and_targets",
    "mdm_loss",
    "poisson_bregman",
    "stratified_times",
]


def poisson_bregman(gaps: Tensor, predicted: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise ``D(x, y) = y - x + x (ln x - ln y)``, the Bregman divergence of ``x ln x``.

    ``D`` is the Poisson negative log-likelihood of ``x`` under mean ``y`` up to a term free of ``y``;
    ``D >= 0`` and ``D = 0`` (with zero gradient in ``y``) iff ``y = x``. Both sides are clamped to
    ``>= eps`` so that ``x = 0`` or ``y = 0`` stay finite; the result is clamped at 0 against rounding.

    Args:
        gaps: ``[...]`` true gap counts ``x`` (any numeric dtype).
        predicted: ``[...]`` predicted gaps ``y``.

    Returns:
        ``[...]`` float32 (or float64 if an input is float64).
    """
    dtype = torch.promote_types(torch.promote_types(gaps.dtype, predicted.dtype), torch.float32)
    x = gaps.to(dtype).clamp_min(eps)
    y = predicted.to(dtype).clamp_min(eps)
    return (y - x + x * (torch.log(x) - torch.log(y))).clamp_min(0.0)


@dataclass
class FlexMDMLoss:
    """Scalar losses, already divided by the normaliser: ``loss = unmask_loss + insertion_loss``."""

    loss: Tensor
    unmask_loss: Tensor
    insertion_loss: Tensor


def _loss_dtype(*outputs: Tensor) -> torch.dtype:
    """float32 for the loss sums (bf16 outputs are upcast), float64 when the model computes in float64
    (exactness tests compare sums over different groupings of the same rows)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in outputs) else torch.float32


def mdm_loss(
    masked_logits: Tensor, masked_targets: Tensor, masked_weights: Tensor, normalizer: float | Tensor
) -> Tensor:
    """LLaDA's masked-diffusion loss (the MDM baseline): ``sum over MASK of w * CE / normalizer``.

    Args:
        masked_logits: ``[N, V]`` logits at the MASK positions; masked_targets: ``[N]`` clean tokens there.
        masked_weights: ``[N]`` per-token weights (LLaDA: ``1 / t`` of the token's row).
        normalizer: what the sum is divided by (the number of non-prompt tokens; counts below 1 are taken as 1).

    Returns:
        A float32 scalar (float64 for float64 logits).
    """
    dtype = _loss_dtype(masked_logits)
    cross_entropy = F.cross_entropy(masked_logits.to(dtype), masked_targets, reduction="none")  # [N]
    normalizer = torch.as_tensor(normalizer, device=masked_logits.device, dtype=dtype).clamp_min(1.0)
    return (masked_weights.to(cross_entropy) * cross_entropy).sum() / normalizer


def flexmdm_loss(
    masked_logits: Tensor,
    masked_targets: Tensor,
    masked_row: Tensor,
    g_hat: Tensor,
    slot_gaps: Tensor,
    slot_valid: Tensor,
    t: Tensor,
    insertion_schedule: Schedule | str | dict,
    unmask_schedule: Schedule | str | dict,
    normalizer: float | Tensor | None = None,
    *,
    non_prompt_lengths: Tensor | None = None,
    eps: float = 1e-3,
    insertion_weighting: str = "elbo",
) -> FlexMDMLoss:
    """The FlexMDM loss of one (micro-)batch.

    Args:
        masked_logits: ``[N, V]`` token logits at the MASK positions (row-major order).
        masked_targets: ``[N]`` long, the clean tokens there.
        masked_row: ``[N]`` long, the batch row of each MASK position.
        g_hat: ``[B, L+1]`` predicted gaps per slot (values at invalid slots are ignored, even NaN).
        slot_gaps: ``[B, L+1]`` true gaps per slot.
        slot_valid: ``[B, L+1]`` bool, the slots that count.
        t: ``[B]`` diffusion time of each row. The weights ``kappa(t)`` diverge as ``t -> 1``, so the time
            used for the weights is clamped to at most ``1 - eps``.
        insertion_schedule / unmask_schedule: ``alpha`` and ``beta``, the same ones that drew the sample.
        normalizer: what both sums are divided by. Default: ``non_prompt_lengths.sum()``, the number of
            non-prompt tokens of ``x1`` in the batch (independent of padding and of ``t``). Under gradient
            accumulation or data parallelism pass the global count instead. Counts below 1 are taken as 1.
        non_prompt_lengths: ``[B]`` non-prompt tokens of ``x1`` per row (``InterpolantSample.non_prompt_lengths``);
            needed only when ``normalizer`` is None.
        eps: distance from ``t = 1`` at which the weights' time is clamped.
        insertion_weighting: ``"elbo"`` weights each slot's divergence by ``kappa_alpha(t)`` (the ELBO);
            ``"constant"`` by 1. Same minimiser; with linear insertion the ELBO weight ``1 / (1 - t)`` puts
            two thirds of the insertion loss on ``t > 0.9``, where nearly every gap is 0, while the gaps
            that decide the length are set at middle times.

    Returns:
        :class:`FlexMDMLoss` of float32 scalars (float64 when the model's outputs are float64).
    """
    if normalizer is None:
        if non_prompt_lengths is None:
            raise ValueError(
                "flexmdm_loss needs normalizer= (e.g. the global number of non-prompt tokens) or "
                "non_prompt_lengths=sample.non_prompt_lengths to count them for this batch."
            )
        normalizer = non_prompt_lengths.sum()
    if slot_gaps.shape != g_hat.shape or slot_valid.shape != g_hat.shape:
        raise ValueError(
            f"g_hat, slot_gaps and slot_valid must share one [B, L+1] shape, got {tuple(g_hat.shape)}, "
            f"{tuple(slot_gaps.shape)} and {tuple(slot_valid.shape)}."
        )
    if masked_logits.shape[0] != masked_targets.shape[0] or masked_row.shape != masked_targets.shape:
        raise ValueError(
            f"masked_logits [N, V], masked_targets [N] and masked_row [N] disagree on N: "
            f"{tuple(masked_logits.shape)}, {tuple(masked_targets.shape)}, {tuple(masked_row.shape)}."
        )
    alpha, beta = build_schedule(insertion_schedule), build_schedule(unmask_schedule)
    dtype = _loss_dtype(masked_logits, g_hat)
    t_weights = t.to(device=g_hat.device, dtype=dtype).clamp(0.0, 1.0 - eps)
    unmask_weight = beta.rate(t_weights)  # [B]
    if insertion_weighting not in INSERTION_WEIGHTINGS:
        raise ValueError(
            f"insertion_weighting must be one of {INSERTION_WEIGHTINGS}, got {insertion_weighting!r}."
        )
    insertion_weight = (
        alpha.rate(t_weights) if insertion_weighting == "elbo" else torch.ones_like(t_weights)
    )  # [B]

    cross_entropy = F.cross_entropy(masked_logits.to(dtype), masked_targets, reduction="none")  # [N]
    unmask_sum = (unmask_weight[masked_row] * cross_entropy).sum()

    # Invalid slots compare the true gap with itself: D = 0 with zero gradient, whatever g_hat holds there.
    g_hat = torch.where(slot_valid, g_hat, slot_gaps.to(g_hat.dtype))
    divergence = poisson_bregman(slot_gaps, g_hat).to(dtype) * insertion_weight[:, None]  # [B, L+1]
    insertion_sum = torch.where(slot_valid, divergence, 0.0).sum()

    normalizer = torch.as_tensor(normalizer, device=g_hat.device, dtype=dtype).clamp_min(1.0)
    unmask_loss = unmask_sum / normalizer
    insertion_loss = insertion_sum / normalizer
    return FlexMDMLoss(
        loss=unmask_loss + insertion_loss, unmask_loss=unmask_loss, insertion_loss=insertion_loss
    )
