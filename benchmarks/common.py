"""Helpers shared by the benchmark scripts (run them from the repository root: python benchmarks/NAME.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_min_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best-of-``repeats`` seconds per function, alternating between them so machine load hits all alike."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best
