import numpy as np
import pytest

from flexretrofit.evaluation.lengths import (
    length_histogram,
    length_stats,
    plot_length_distributions,
    total_variation_distance,
)


def test_length_stats_values():
    stats = length_stats([1, 2, 3, 4, 10])
    assert stats.count == 5 and stats.min == 1 and stats.max == 10
    assert stats.mean == pytest.approx(4.0)
    assert stats.std == pytest.approx(np.std([1, 2, 3, 4, 10]))
    assert stats.quantiles["p50"] == 3.0
    assert stats.quantiles["p25"] == 2.0 and stats.quantiles["p95"] == pytest.approx(8.8)
    assert stats.to_dict()["quantiles"]["p05"] == pytest.approx(1.2)


def test_histogram_bins_and_overflow():
    counts, edges = length_histogram([0, 1, 1, 5, 9], bin_width=2)
    assert edges.tolist() == [0, 2, 4, 6, 8, 10]
    assert counts.tolist() == [3, 0, 1, 0, 1]
    counts, edges = length_histogram([0, 1, 1, 5, 9], bin_width=2, max_length=5)
    assert counts.tolist() == [3, 0, 2]  # 9 is counted in the last bin


def test_total_variation_distance():
    assert total_variation_distance([3, 4, 5], [5, 4, 3]) == 0.0
    assert total_variation_distance([1, 1], [7, 8]) == 1.0
    # p = {1: .5, 2: .5}, q = {2: 1}: TV = 0.5 * (0.5 + 0.5)
    assert total_variation_distance([1, 2], [2, 2]) == pytest.approx(0.5)
    assert total_variation_distance([1, 2], [2, 3], bin_width=4) == 0.0  # same bin [0, 4)
    rng = np.random.default_rng(0)
    close = total_variation_distance(rng.poisson(50, 4000), rng.poisson(50, 4000), bin_width=5)
    far = total_variation_distance(rng.poisson(50, 4000), rng.poisson(80, 4000), bin_width=5)
    assert close < 0.05 < 0.5 < far


@pytest.mark.parametrize("bad", [[], [1, -2], [1.5, 2]])
def test_invalid_lengths_are_rejected(bad):
    with pytest.raises(ValueError):
        length_stats(bad)


def test_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_length_distributions(
        rng.poisson(40, 300), rng.poisson(45, 300), tmp_path / "plots" / "lengths.png"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
