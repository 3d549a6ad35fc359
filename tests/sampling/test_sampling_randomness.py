"""Counter-based randomness: the hash, uniforms independent of batch layout, Poisson and categorical inversion."""

import math

import pytest
import torch

from flexretrofit.sampling.randomness import (
    POISSON_EXACT_MAX,
    binomial_inverse_cdf,
    categorical_inverse_cdf,
    counter_uniform,
    mix64,
    poisson_inverse_cdf,
    row_seeds,
)

MASK64 = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    """splitmix64 on Python integers (unbounded, reduced mod 2^64 by hand)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def test_mix64_matches_splitmix64_bit_for_bit():
    inputs = [0, 1, 12345, 2**62 + 7, -1, -(2**63)]
    got = mix64(torch.tensor(inputs, dtype=torch.long)).tolist()
    assert [g & MASK64 for g in got] == [splitmix64_reference(x & MASK64) for x in inputs]


def test_uniforms_are_in_the_open_interval_and_look_uniform():
    u = counter_uniform(torch.tensor([[7]]), 3, 1, torch.arange(20_000)[None]).flatten()
    assert u.dtype == torch.float64 and (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / len(u))
    assert abs(u.var().item() - 1 / 12) < 0.005
    histogram = torch.histc(u, bins=10, min=0, max=1)
    assert (histogram - 2000).abs().max() < 4 * math.sqrt(2000)


def test_each_row_draws_the_same_numbers_in_any_batch():
    seeds = torch.tensor([5, 9, 11])
    batch = counter_uniform(seeds[:, None], 2, 3, torch.arange(8)[None])
    alone = counter_uniform(torch.tensor([9]), 2, 3, torch.arange(8))
    assert torch.equal(batch[1], alone)
    wider = counter_uniform(seeds[:, None], 2, 3, torch.arange(16)[None])
    assert torch.equal(wider[:, :8], batch)


def test_every_counter_changes_the_draw():
    base = counter_uniform(torch.tensor([5]), 2, 3, torch.arange(64))
    for other in (
        counter_uniform(torch.tensor([6]), 2, 3, torch.arange(64)),
        counter_uniform(torch.tensor([5]), 3, 3, torch.arange(64)),
        counter_uniform(torch.tensor([5]), 2, 1, torch.arange(64)),
        counter_uniform(torch.tensor([5]), 2, 3, torch.arange(1, 65)),
    ):
        assert not torch.isclose(base, other).any()


@pytest.mark.parametrize("rate", [0.05, 0.7, 3.0, 12.0, POISSON_EXACT_MAX + 4.0, 80.0])
def test_poisson_inversion_has_the_right_mean_and_variance(rate):
    n = 40_000
    u = counter_uniform(torch.tensor([1]), 0, 0, torch.arange(n))
    counts = poisson_inverse_cdf(torch.full((n,), rate), u).double()
    assert counts.dtype == torch.float64 and (counts >= 0).all()
    assert abs(counts.mean().item() - rate) < 4 * math.sqrt(rate / n)
    assert abs(counts.var().item() - rate) < 0.06 * rate + 0.01


def test_poisson_inversion_is_exact_where_the_cdf_is_known():
    # P(X = 0) = exp(-lam): u just below / above it gives 0 / 1.
    rate = torch.tensor([1.3, 1.3, 0.0, 0.0], dtype=torch.float64)
    edge = math.exp(-1.3)
    u = torch.tensor([edge - 1e-9, edge + 1e-9, 0.999999, 1e-9], dtype=torch.float64)
    assert poisson_inverse_cdf(rate, u).tolist() == [0, 1, 0, 0]
    grid = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    assert (poisson_inverse_cdf(torch.full((101,), 4.0), grid).diff() >= 0).all()


def test_categorical_inversion_follows_the_probabilities_and_skips_zeros():
    probs = torch.tensor([0.0, 0.2, 0.0, 0.5, 0.3, 0.0])
    n = 30_000
    u = counter_uniform(torch.tensor([4]), 0, 0, torch.arange(n))
    tokens = categorical_inverse_cdf(probs.expand(n, -1), u)
    frequency = torch.bincount(tokens, minlength=6).double() / n
    assert frequency[[0, 2, 5]].sum() == 0
    assert torch.allclose(frequency, probs.double(), atol=0.015)
    edge = categorical_inverse_cdf(probs[None], torch.tensor([1.0 - 2.0**-53], dtype=torch.float64))
    assert edge.item() == 4


def test_row_seeds_default_to_seed_plus_row_and_check_explicit_lists():
    assert row_seeds(10, None, 3).tolist() == [10, 11, 12]
    assert row_seeds(10, [4, 4, 8], 3).tolist() == [4, 4, 8]
    with pytest.raises(ValueError, match="one seed per row"):
        row_seeds(0, [1, 2], 3)


@pytest.mark.parametrize("count,prob", [(1, 0.3), (7, 0.5), (20, 0.05), (40, 0.9)])
def test_binomial_inversion_has_the_right_mean_and_variance(count, prob):
    n = 40_000
    u = counter_uniform(torch.tensor([2]), 0, 0, torch.arange(n))
    draws = binomial_inverse_cdf(torch.full((n,), count), prob, u).double()
    assert ((draws >= 0) & (draws <= count)).all()
    mean, variance = count * prob, count * prob * (1 - prob)
    assert abs(draws.mean().item() - mean) < 4 * math.sqrt(variance / n)
    assert abs(draws.var().item() - variance) < 0.06 * variance + 0.01


def test_binomial_inversion_is_exact_at_the_edges():
    u = torch.tensor([0.5, 0.999, 1e-9, 0.5], dtype=torch.float64)
    counts = torch.tensor([5, 0, 3, 4])
    prob = torch.tensor([1.0, 0.7, 0.0, 0.5], dtype=torch.float64)
    assert binomial_inverse_cdf(counts, prob, u).tolist() == [5, 0, 0, 2]
    # P(X = 0 | n = 2, p = 0.5) = 1/4: u just below / above it gives 0 / 1.
    edge = torch.tensor([0.25 - 1e-9, 0.25 + 1e-9], dtype=torch.float64)
    assert binomial_inverse_cdf(torch.tensor([2, 2]), 0.5, edge).tolist() == [0, 1]
