"""Counter-based randomness: every draw is a hash of (row seed, step, stream, index), never a generator state.

A row's draws therefore do not depend on which other rows share its batch, how the batch is padded,
or the order work is done in: a batch gives, per row, what each prompt gives alone. The hash is the
splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2^64, and logical right shifts
are emulated with a mask), so it runs with plain tensor ops on any device.

Counts come from the inverse CDF of one uniform each. Poisson: an exact table over ``k < POISSON_TABLE``
for means up to ``POISSON_EXACT_MAX``, and the normal approximation ``floor(lam + sqrt(lam) z + 1/2)``
above it (sampler means are small; large ones only appear for unmask counts with very few steps).
Binomial: an exact table over ``k = 0 .. n``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Stream ids: independent families of draws within one step.
STREAM_UNMASK_COUNT = 1
STREAM_TOKEN = 2
STREAM_INSERTION = 3
STREAM_ROUNDING = 4

POISSON_EXACT_MAX = 16.0
POISSON_TABLE = 64  # P(X >= 64 | lam = 16) < 1e-17


def _int64(constant: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_GOLDEN = _int64(0x9E3779B97F4A7C15)
_MIX1 = _int64(0xBF58476D1CE4E5B9)
_MIX2 = _int64(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (``>>`` on int64 is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64 step on an int64 tensor ``[...]`` -> ``[...]``: add the golden gamma, then finalise."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def counter_uniform(seed: Tensor, step: int, stream: int, index: Tensor) -> Tensor:
    """Uniforms in (0, 1), float64, one per broadcast element of ``seed`` and ``index``.

    Args:
        seed: int64 row seeds, broadcastable against ``index`` (e.g. ``[B, 1]``).
        step: the sampler step; stream: which family of draws (``STREAM_*``).
        index: int64 position or slot indices (e.g. ``[B, n]`` or ``[n]``).

    Returns:
        ``broadcast(seed, index).shape`` float64 uniforms, strictly inside (0, 1).
    """
    key = mix64(mix64(mix64(seed.long()) ^ stream) ^ step)
    bits = mix64(key ^ index.long())
    return (_shift_right(bits, 11).double() + 0.5) * 2.0**-53


def poisson_inverse_cdf(rate: Tensor, uniform: Tensor) -> Tensor:
    """Poisson counts with mean ``rate`` by inversion of ``uniform`` (both ``[...]``) -> int64 ``[...]``.

    Exact for ``rate <= POISSON_EXACT_MAX`` (up to counts of ``POISSON_TABLE - 1``); normal approximation
    with continuity correction above. A rate of 0 gives 0.
    """
    rate = rate.double().clamp(min=0.0)
    uniform = uniform.double()
    small = rate.clamp(max=POISSON_EXACT_MAX)
    k = torch.arange(POISSON_TABLE, dtype=torch.float64, device=rate.device)
    # log pmf(k) = k log(lam) - lam - log(k!); xlogy gives 0 * log(0) = 0 so that lam = 0 puts all mass on k = 0.
    log_pmf = torch.special.xlogy(k, small[..., None]) - small[..., None] - torch.lgamma(k + 1.0)
    cdf = log_pmf.exp().cumsum(dim=-1)
    exact = (cdf < uniform[..., None]).sum(dim=-1)
    z = math.sqrt(2.0) * torch.special.erfinv(2.0 * uniform - 1.0)
    approx = torch.floor(rate + rate.sqrt() * z + 0.5).clamp(min=0.0).long()
    return torch.where(rate <= POISSON_EXACT_MAX, exact, approx)


def binomial_inverse_cdf(count: Tensor, prob: Tensor | float, uniform: Tensor) -> Tensor:
    """Binomial draws ``Bin(count, prob)`` by inversion of ``uniform`` (all broadcast to ``[...]``) -> int64 ``[...]``.

    Exact (a table over ``k = 0 .. max(count)``): sampler counts are small. ``prob`` is clamped into [0, 1];
    ``prob = 1`` returns ``count`` and ``count = 0`` returns 0.
    """
    count = count.long().clamp(min=0)
    prob = torch.as_tensor(prob, dtype=torch.float64, device=count.device).clamp(0.0, 1.0)
    count, prob, uniform = torch.broadcast_tensors(count, prob, uniform.double())
    k = torch.arange(int(count.max()) + 1 if count.numel() else 1, dtype=torch.float64, device=count.device)
    n, q = count.double()[..., None], prob[..., None]
    log_choose = torch.lgamma(n + 1.0) - torch.lgamma(k + 1.0) - torch.lgamma((n - k).clamp(min=0.0) + 1.0)
    # xlogy keeps 0 * log(0) = 0, so prob in {0, 1} puts all mass on k = 0 or k = n.
    log_pmf = log_choose + torch.special.xlogy(k, q) + torch.special.xlogy(n - k, 1.0 - q)
    pmf = torch.where(k <= n, log_pmf.exp(), 0.0)
    draws = (pmf.cumsum(dim=-1) < uniform[..., None] * pmf.sum(dim=-1, keepdim=True)).sum(dim=-1)
    return torch.minimum(draws, count)


def categorical_inverse_cdf(probs: Tensor, uniform: Tensor) -> Tensor:
    """One draw per row of ``probs`` ``[N, V]`` (rows sum to ~1) by inversion of ``uniform`` ``[N]`` -> ``[N]``.

    Tokens of probability 0 are never returned (rounding at the top of the CDF falls back to the argmax).
    """
    cdf = probs.double().cumsum(dim=-1)
    target = (uniform.double() * cdf[:, -1])[:, None]
    token = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)
    ok = probs.gather(1, token[:, None]).squeeze(1) > 0
    return torch.where(ok, token, probs.argmax(dim=-1))


def row_seeds(seed: int, row_seed_list: list[int] | None, batch_size: int, device=None) -> Tensor:
    """int64 seeds ``[B]``: the explicit per-row list, else ``seed + row index``."""
    if row_seed_list is not None:
        if len(row_seed_list) != batch_size:
            raise ValueError(
                f"row_seeds has {len(row_seed_list)} entries for a batch of {batch_size} rows; give one seed per row."
            )
        return torch.tensor(row_seed_list, dtype=torch.long, device=device)
    return seed + torch.arange(batch_size, dtype=torch.long, device=device)
