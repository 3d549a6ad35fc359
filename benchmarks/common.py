"""Helpers shared by the benchmark scripts (run them from the repository root: python benchmarks/NAME.py)."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch


def interleaved_times(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[list[float]]:
    """Seconds of every run of every function, alternating A, B, A, B ... so machine load hits all alike.

    Each function first runs ``warmup`` times untimed. Returns one list of ``repeats`` timings per function.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return times


def interleaved_min_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best-of-``repeats`` seconds per function, alternating between them so machine load hits all alike."""
    return [min(samples) for samples in interleaved_times(fns, repeats)]


def interleaved_median_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median of ``repeats`` interleaved runs per function (robust to a busy machine's outliers)."""
    return [statistics.median(samples) for samples in interleaved_times(fns, repeats)]


# -- devices, memory and attention kernels ------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    """Peak allocated GPU memory since :func:`reset_peak` (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    def run():
        fn()
        synchronize(device)

    return interleaved_times([run], repeats)[0]


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines would drown the table)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def attention_kernels(fn: Callable[[], object]) -> list[str]:
    """The SDPA kernels one call of ``fn`` ran, from the profiler's ATen op names (flash, mem-efficient, ...)."""
    names = {
        "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
        "_scaled_dot_product_flash_attention": "flash",
        "_scaled_dot_product_efficient_attention": "mem-efficient",
        "_scaled_dot_product_cudnn_attention": "cudnn",
        "_scaled_dot_product_fused_attention_overrideable": "fused (backend)",
        "_scaled_dot_product_attention_math": "math",
    }
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fn()
    seen = {event.key.removeprefix("aten::") for event in profile.key_averages()}
    found = sorted({label for op, label in names.items() if op in seen})
    return found or ["none seen (not SDPA: eager or another attention implementation)"]


def sdpa_backends(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int, length: int) -> dict:
    """Which SDPA backends accept the model's attention shapes, without a mask and with a key-padding mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, heads, length, head_dim, device=device, dtype=dtype)
    keys = torch.ones(2, 1, 1, length, dtype=torch.bool, device=device)
    keys[1, ..., length // 2 :] = False
    result = {}
    for case, mask in (("no_mask", None), ("key_padding_mask", keys)):
        result[case] = {}
        for name, backend in (
            ("flash", SDPBackend.FLASH_ATTENTION),
            ("mem-efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("math", SDPBackend.MATH),
        ):
            try:
                with sdpa_kernel([backend]):
                    torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
                result[case][name] = True
            except RuntimeError:
                result[case][name] = False
    return result


# -- FLOP counting ------------------------------------------------------------------------------

# Dense bf16 peak of common accelerators (no sparsity), in FLOP/s; a substring of the device name selects one.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
}


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak for ``device_name`` (e.g. ``"NVIDIA H100 80GB HBM3"``), None when unknown."""
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_FLOPS[key]
    return None


FLOP_FORMULA = (
    "F = 4 * (P * T + P_head * N) + 12 * n_layers * d * sum(L_b^2) + 6 * (p_tok * T + p_mask * N); "
    "P: block matmul weights, P_head: LM head, T = sum(L_b): tokens of the forward (x_t widths + slot), "
    "N: MASK positions with logits, p_tok / p_mask: trainable weights (LoRA, insertion head) per token / "
    "per MASK position; frozen weights: forward + activation gradients, no weight gradients; "
    "activation-checkpointing recomputation not counted"
)


def retrofit_step_flops(
    config,
    sequence_lengths: list[int],
    masked_tokens: int,
    trainable_per_token: int = 0,
    trainable_per_masked_token: int = 0,
) -> float:
    """Model FLOPs of one forward + backward of a LoRA retrofit micro-batch (the count MFU divides by).

    With ``P`` the block matmul weights, ``P_head`` the LM head, ``T = sum(L_b)`` the tokens the forward runs
    on (x_t widths, padding included, slot position included), ``N`` the MASK positions that get logits,
    ``n`` layers and ``d`` the width::

        F = 4 * (P * T + P_head * N)                  frozen weights: forward 2PT + activation gradients 2PT
          + 12 * n * d * sum(L_b ** 2)                attention: QK^T and PV, 4 d L^2 forward + 8 d L^2 backward
          + 6 * (p_tok * T + p_mask * N)              trainable weights (LoRA, insertion head): + weight grads

    The frozen backbone's weight gradients are not computed and not counted; the recomputation of
    activation checkpointing is not counted either (it is overhead, not model work), so MFU stays
    comparable with and without it.
    """
    # The one count of the matmul weights; imported here, so that a script importing this module checks
    # its flags without importing flexretrofit (transformers, ~5 s) first.
    from flexretrofit.data.balancing import backbone_matmul_params

    blocks, head = backbone_matmul_params(config)
    tokens = sum(sequence_lengths)
    frozen = 4 * (blocks * tokens + head * masked_tokens)
    attention = 12 * config.n_layers * config.d_model * sum(n * n for n in sequence_lengths)
    trainable = 6 * (trainable_per_token * tokens + trainable_per_masked_token * masked_tokens)
    return float(frozen + attention + trainable)
