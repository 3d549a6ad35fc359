import math

import pytest
import torch

from flexretrofit.diffusion import (
    IGNORE_INDEX,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    sample_interpolant,
)
from flexretrofit.diffusion.interpolant import stratified_times

MASK_ID, PAD_ID = 3, 0
GEOMETRIC = GeometricSchedule(min=10.0, max=0.01)


def make_batch(width: int = 12, extra_pad: int = 0, seed: int = 0):
    """Rows: plain prompt + answer, no prompt, infill (prefix/suffix protected), all prompt, empty."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randint(5, 50, (5, width), generator=g)
    x1 = torch.cat([x1, torch.full((5, extra_pad), PAD_ID)], dim=1)
    lengths = [12, 9, 11, 4, 0]
    attention = torch.arange(width + extra_pad)[None, :] < torch.tensor(lengths)[:, None]
    x1 = torch.where(attention, x1, PAD_ID)
    prompt = torch.zeros_like(attention)
    prompt[0, :4] = True
    prompt[2, :3] = True
    prompt[2, 8:11] = True  # suffix of an infilling sample
    prompt[3, :4] = True
    return x1, attention, prompt


LINEAR = LinearSchedule()


def draw(x1, attention, prompt, t, alpha=LINEAR, beta=LINEAR, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return sample_interpolant(x1, attention, prompt, t, alpha, beta, MASK_ID, PAD_ID, generator=generator)


TIMES = [0.0, 0.3, 0.7, 1.0]


@pytest.mark.parametrize("alpha", [LinearSchedule(), GEOMETRIC], ids=["linear", "geometric"])
def test_xt_is_an_in_order_subsequence_with_masks(alpha):
    x1, attention, prompt = make_batch()
    for seed in range(5):
        for t in [torch.tensor([0.1, 0.5, 0.9, 0.4, 0.6])] + TIMES:
            sample = draw(x1, attention, prompt, t, alpha=alpha, beta=CosineSchedule(), seed=seed)
            assert torch.equal(sample.lengths, sample.xt_attention_mask.sum(1))
            for b in range(x1.shape[0]):
                n = int(sample.lengths[b])
                src = sample.source_index[b, :n]
                assert (src.diff() > 0).all() and bool(attention[b, src].all())
                masked = sample.is_masked[b, :n]
                assert torch.equal(sample.xt[b, :n][~masked], x1[b, src][~masked])
                assert (sample.xt[b, :n][masked] == MASK_ID).all()
                assert torch.equal(sample.targets[b, :n][masked], x1[b, src][masked])
                assert (sample.targets[b, :n][~masked] == IGNORE_INDEX).all()
                assert not bool(prompt[b, src][masked].any())
                # Padding after the compacted tokens.
                assert (sample.xt[b, n:] == PAD_ID).all() and (sample.source_index[b, n:] == -1).all()
                assert (
                    not bool(sample.is_masked[b, n:].any()) and (sample.targets[b, n:] == IGNORE_INDEX).all()
                )


def test_prompt_tokens_are_present_clean_and_in_place():
    x1, attention, prompt = make_batch()
    for seed in range(5):
        for t in TIMES:
            sample = draw(x1, attention, prompt, t, alpha=GEOMETRIC, seed=seed)
            for b in range(x1.shape[0]):
                n = int(sample.lengths[b])
                src = sample.source_index[b, :n].tolist()
                prompt_columns = prompt[b].nonzero().flatten().tolist()
                assert set(prompt_columns) <= set(src)
                for column in prompt_columns:
                    j = src.index(column)
                    assert sample.xt[b, j] == x1[b, column] and not sample.is_masked[b, j]
            # A leading prompt keeps its positions.
            assert torch.equal(sample.xt[0, :4], x1[0, :4]) and torch.equal(sample.xt[2, :3], x1[2, :3])
            assert torch.equal(sample.xt[3], x1[3])


def test_ends_of_time():
    x1, attention, prompt = make_batch()
    for alpha in (LinearSchedule(), GEOMETRIC):
        clean = draw(x1, attention, prompt, 1.0, alpha=alpha)
        assert torch.equal(clean.xt, x1) and not bool(clean.is_masked.any())
        assert torch.equal(clean.slot_gaps, torch.zeros_like(clean.slot_gaps))
    start = draw(x1, attention, prompt, 0.0)
    assert torch.equal(start.lengths, prompt.sum(1))
    assert start.slot_gaps.sum() == (attention & ~prompt).sum()


@pytest.mark.parametrize("alpha", [LinearSchedule(), GEOMETRIC], ids=["linear", "geometric"])
def test_slot_gaps_count_the_deleted_tokens(alpha):
    x1, attention, prompt = make_batch()
    for seed in range(5):
        for t in TIMES[1:3]:
            sample = draw(x1, attention, prompt, t, alpha=alpha, seed=seed)
            gaps = sample.slot_gaps
            assert gaps.shape == (x1.shape[0], x1.shape[1] + 1)
            assert (gaps >= 0).all()
            assert torch.equal(sample.slot_valid.sum(1), sample.lengths + 1)
            assert (gaps[~sample.slot_valid] == 0).all()
            assert torch.equal(gaps.sum(1), attention.sum(1) - sample.lengths)
            assert torch.equal(sample.non_prompt_lengths, (attention & ~prompt).sum(1))
            for b in range(x1.shape[0]):
                n = int(sample.lengths[b])
                src = sample.source_index[b, :n].tolist()
                for i in range(n + 1):
                    before_is_prompt = i == 0 or bool(prompt[b, src[i - 1]])
                    after_is_prompt = i < n and bool(prompt[b, src[i]])
                    if before_is_prompt and after_is_prompt and (i == 0 or src[i] == src[i - 1] + 1):
                        assert gaps[b, i] == 0  # nothing is ever deleted inside the prompt


def test_reinserting_the_gaps_restores_x1():
    x1, attention, prompt = make_batch()
    for seed in range(5):
        for t in TIMES[1:3]:
            sample = draw(x1, attention, prompt, t, alpha=GEOMETRIC, seed=seed)
            for b in range(x1.shape[0]):
                n = int(sample.lengths[b])
                rebuilt = []  # (x1 column or None for a re-inserted token)
                for i in range(n + 1):
                    rebuilt += [None] * int(sample.slot_gaps[b, i])
                    if i < n:
                        rebuilt.append(int(sample.source_index[b, i]))
                assert len(rebuilt) == int(attention[b].sum())
                kept = [j for j, column in enumerate(rebuilt) if column is not None]
                assert kept == sample.source_index[b, :n].tolist()


def test_right_padding_does_not_change_the_sample():
    x1, attention, prompt = make_batch()
    x1_wide, attention_wide, prompt_wide = make_batch(extra_pad=7)
    assert torch.equal(x1_wide[:, :12], x1)
    t = torch.tensor([0.2, 0.5, 0.5, 0.8, 0.3])
    narrow = draw(x1, attention, prompt, t, alpha=GEOMETRIC, seed=3)
    wide = draw(x1_wide, attention_wide, prompt_wide, t, alpha=GEOMETRIC, seed=3)
    for name in ("xt", "xt_attention_mask", "source_index", "is_masked", "targets"):
        assert torch.equal(getattr(wide, name)[:, :12], getattr(narrow, name)), name
    for name in ("slot_gaps", "slot_valid"):
        assert torch.equal(getattr(wide, name)[:, :13], getattr(narrow, name)), name
    assert torch.equal(wide.lengths, narrow.lengths)
    assert (wide.xt[:, 12:] == PAD_ID).all() and not bool(wide.slot_valid[:, 13:].any())


def test_generator_makes_samples_reproducible():
    x1, attention, prompt = make_batch()
    a, b = draw(x1, attention, prompt, 0.5, seed=1), draw(x1, attention, prompt, 0.5, seed=1)
    c = draw(x1, attention, prompt, 0.5, seed=2)
    assert torch.equal(a.xt, b.xt) and torch.equal(a.slot_gaps, b.slot_gaps)
    assert not torch.equal(a.source_index, c.source_index) or not torch.equal(a.is_masked, c.is_masked)


def _monte_carlo(alpha, beta, times, rows_per_time=256, width=64, seed=0):
    """Fractions of non-prompt tokens present and clean at each time."""
    rows = len(times) * rows_per_time
    x1 = torch.randint(5, 50, (rows, width), generator=torch.Generator().manual_seed(seed))
    attention = torch.ones_like(x1, dtype=torch.bool)
    prompt = torch.zeros_like(attention)
    t = torch.tensor(times).repeat_interleave(rows_per_time)
    sample = draw(x1, attention, prompt, t, alpha=alpha, beta=beta, seed=seed)
    present = sample.lengths.float().view(len(times), rows_per_time).sum(1) / (rows_per_time * width)
    clean = (sample.xt_attention_mask & ~sample.is_masked).sum(1).float()
    clean = clean.view(len(times), rows_per_time).sum(1) / (rows_per_time * width)
    return present, clean, rows_per_time * width


def _assert_close(observed: float, expected: float, n: int, name: str):
    se = math.sqrt(max(expected * (1 - expected), 1e-4) / n)
    assert abs(observed - expected) < 4 * se, (
        f"{name}: observed {observed:.4f}, expected {expected:.4f} (se {se:.4f})"
    )


TIMES_MC = [0.2, 0.5, 0.8]


@pytest.mark.parametrize("alpha", [LinearSchedule(), GEOMETRIC], ids=["linear", "geometric"])
def test_present_marginal_is_alpha(alpha):
    present, _, n = _monte_carlo(alpha, LinearSchedule(), TIMES_MC)
    for t, observed in zip(TIMES_MC, present.tolist()):
        _assert_close(observed, alpha.value(torch.tensor(t)).item(), n, f"P(present | t={t})")


def test_clean_marginal_linear_linear():
    _, clean, n = _monte_carlo(LinearSchedule(), LinearSchedule(), TIMES_MC)
    for t, observed in zip(TIMES_MC, clean.tolist()):
        _assert_close(observed, t + (1 - t) * math.log(1 - t), n, f"P(clean | t={t})")


def test_clean_marginal_for_a_nonlinear_unmask_schedule():
    """The truncated unmasking time is right for any beta, not only for a linear one."""
    alpha, beta = GEOMETRIC, CosineSchedule()
    _, clean, n = _monte_carlo(alpha, beta, TIMES_MC, seed=1)
    for t, observed in zip(TIMES_MC, clean.tolist()):
        # P(T2 <= t) = alpha(0) P(T2 <= t | T1 = 0) + int_0^t (beta(t) - beta(s)) / (1 - beta(s)) alpha'(s) ds
        s = torch.linspace(0.0, t, 20001, dtype=torch.float64)
        beta_t, beta_s = beta.value(torch.tensor(t, dtype=torch.float64)), beta.value(s)
        integrand = (beta_t - beta_s) / (1 - beta_s) * alpha.derivative(s)
        expected = torch.trapezoid(integrand, s) + alpha.value(s[0]) * (beta_t - beta_s[0]) / (1 - beta_s[0])
        _assert_close(observed, expected.item(), n, f"P(clean | t={t})")


def test_input_errors():
    x1, attention, prompt = make_batch()
    with pytest.raises(ValueError, match="prompt_mask is True at padding"):
        draw(x1, attention, prompt | ~attention, 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        draw(x1, attention, prompt, 1.5)
    with pytest.raises(ValueError, match="t must be"):
        draw(x1, attention, prompt, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="x1_attention_mask must have"):
        draw(x1, attention[:, :5], prompt, 0.5)


def _union_over_ranks(batch_size, world_size, seed, eps):
    return torch.cat(
        [
            stratified_times(
                batch_size,
                rank=r,
                world_size=world_size,
                generator=torch.Generator().manual_seed(seed),
                eps=eps,
            )
            for r in range(world_size)
        ]
    ).double()


def test_stratified_times_form_one_shifted_grid_across_ranks():
    batch_size, world_size = 8, 4
    n = batch_size * world_size
    for seed in range(5):
        t = _union_over_ranks(batch_size, world_size, seed, eps=0.0)
        # Exactly one time in each of the n equal cells of [0, 1), all at the same offset in its cell.
        assert sorted(torch.floor(t * n).long().tolist()) == list(range(n))
        offsets = torch.remainder(t * n, 1.0)
        assert (offsets - offsets[0]).abs().max() < 1e-4
    # Equally seeded ranks share the offset; another seed shifts the grid.
    assert not torch.allclose(_union_over_ranks(8, 4, 0, 0.0), _union_over_ranks(8, 4, 1, 0.0))


def test_stratified_times_stay_inside_eps():
    eps = 1e-3
    for seed in range(50):
        t = _union_over_ranks(4, 2, seed, eps)
        assert t.min() >= eps - 1e-7 and t.max() <= 1 - eps + 1e-7
        x = (t - eps) / (1 - eps)  # back onto the grid (one point may sit at the clamp)
        assert sorted(torch.floor(x * 8).clamp(max=7).long().tolist()) == list(range(8))
    t = stratified_times(3, generator=torch.Generator().manual_seed(0))
    assert t.shape == (3,) and t.dtype == torch.float32
    with pytest.raises(ValueError, match="rank < world_size"):
        stratified_times(4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        stratified_times(0)
