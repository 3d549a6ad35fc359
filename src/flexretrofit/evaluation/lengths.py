"""Length statistics: how long generated sequences are, compared with the data they imitate.

A flexible-length model should match the reference length distribution, not just its mean, so
besides summary statistics this module gives the total-variation distance between the two
empirical distributions and a plot of both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flexretrofit.evaluation.stats import as_lengths, length_histogram, total_variation_distance

__all__ = [
    "DEFAULT_QUANTILES",
    "LengthStats",
    "length_histogram",
    "length_stats",
    "plot_length_distributions",
    "total_variation_distance",
]
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class LengthStats:
    """Summary of a sample of lengths; ``quantiles`` maps e.g. ``"p50"`` to the median (linear interpolation)."""

    count: int
    mean: float
    std: float
    min: int
    max: int
    quantiles: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def length_stats(lengths: Sequence[int], quantiles: Sequence[float] = DEFAULT_QUANTILES) -> LengthStats:
    values = as_lengths(lengths, "lengths")
    return LengthStats(
        count=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=int(values.min()),
        max=int(values.max()),
        quantiles={f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in quantiles},
    )


def plot_length_distributions(
    generated: Sequence[int],
    reference: Sequence[int],
    path: str | os.PathLike,
    *,
    bin_width: int | None = None,
    title: str = "Generated vs reference length",
    labels: tuple[str, str] = ("generated", "reference"),
) -> Path:
    """Save a PNG with both length histograms (as densities), their means and the TV distance.

    Draws on an Agg canvas directly, so it neither needs a display nor changes pyplot's backend.
    ``bin_width`` defaults to about 40 bins over the joint range.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    generated_values = as_lengths(generated, "generated")
    reference_values = as_lengths(reference, "reference")
    top = int(max(generated_values.max(), reference_values.max()))
    width = bin_width or max(1, -(-(top + 1) // 40))
    distance = total_variation_distance(generated_values, reference_values, width)

    figure = Figure(figsize=(7, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for values, label, color in (
        (reference_values, labels[1], "tab:gray"),
        (generated_values, labels[0], "tab:blue"),
    ):
        counts, edges = length_histogram(values, width, top)
        axes.stairs(
            counts / values.size,
            edges,
            label=f"{label} (n={values.size}, mean={values.mean():.1f})",
            color=color,
            linewidth=1.5,
        )
        axes.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
    axes.set_xlabel("length (tokens)")
    axes.set_ylabel(f"fraction per {width}-token bin")
    axes.set_title(f"{title} (TV distance {distance:.3f})")
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
