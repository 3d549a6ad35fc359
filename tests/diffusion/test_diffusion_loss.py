import math

import pytest
import torch
import torch.nn.functional as F

import flexretrofit.diffusion.interpolant as interpolant_module
import flexretrofit.diffusion.loss as loss_module
from flexretrofit.diffusion import (
    IGNORE_INDEX,
    GeometricSchedule,
    LinearSchedule,
    flexmdm_loss,
    masked_positions_and_targets,
    poisson_bregman,
    sample_interpolant,
)

MASK_ID, PAD_ID, VOCAB = 3, 0, 50
ALPHA, BETA = GeometricSchedule(min=10.0, max=0.01), LinearSchedule()


def test_poisson_bregman_is_a_divergence():
    x = torch.arange(0, 21, dtype=torch.float64)[:, None].expand(21, 200)
    y = torch.logspace(-8, 2, 200, dtype=torch.float64)[None, :].expand(21, 200)
    d = poisson_bregman(x, y)
    assert d.dtype == torch.float64 and (d >= 0).all() and torch.isfinite(d).all()
    assert poisson_bregman(torch.tensor(2.0), torch.tensor(1.0)).item() == pytest.approx(2 * math.log(2) - 1)
    # Far from the minimum it is strictly positive.
    assert (d[(y - x).abs() > 1e-2] > 0).all()
    # Integer gaps and zero predictions stay finite.
    assert torch.isfinite(poisson_bregman(torch.tensor([0, 3]), torch.tensor([0.0, 0.0]))).all()


def test_poisson_bregman_is_zero_with_zero_gradient_at_the_truth():
    gaps = torch.tensor([0, 1, 2, 7, 40])
    predicted = gaps.float().clone().requires_grad_(True)
    d = poisson_bregman(gaps, predicted)
    assert torch.equal(d, torch.zeros(5))
    d.sum().backward()
    assert torch.allclose(predicted.grad, torch.zeros(5), atol=1e-6)
    # ... and a non-zero gradient pointing towards the truth elsewhere.
    off = torch.tensor([0.5, 3.0], requires_grad=True)
    poisson_bregman(torch.tensor([1, 2]), off).sum().backward()
    assert off.grad[0] < 0 < off.grad[1]


def make_sample(extra_pad=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = 16
    x1 = torch.randint(5, VOCAB, (4, width), generator=g)
    x1 = torch.cat([x1, torch.full((4, extra_pad), PAD_ID)], dim=1)
    attention = torch.arange(width + extra_pad)[None, :] < torch.tensor([16, 11, 7, 13])[:, None]
    x1 = torch.where(attention, x1, PAD_ID)
    prompt = torch.zeros_like(attention)
    prompt[:, :3] = True
    t = torch.tensor([0.15, 0.45, 0.75, 1.0])
    sample = sample_interpolant(
        x1,
        attention,
        prompt,
        t,
        ALPHA,
        BETA,
        MASK_ID,
        PAD_ID,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    return sample, t


def loss_of(sample, t, logits, g_hat, **kwargs):
    _, targets, rows = masked_positions_and_targets(sample)
    return flexmdm_loss(
        logits,
        targets,
        rows,
        g_hat,
        sample.slot_gaps,
        sample.slot_valid,
        t,
        ALPHA,
        BETA,
        non_prompt_lengths=sample.non_prompt_lengths,
        **kwargs,
    )


def test_the_forward_process_helpers_stay_importable_from_loss():
    # They moved beside the interpolant; the old import path keeps working.
    assert loss_module.stratified_times is interpolant_module.stratified_times
    assert loss_module.masked_positions_and_targets is interpolant_module.masked_positions_and_targets


def test_masked_positions_and_targets():
    sample, _ = make_sample()
    positions, targets, rows = masked_positions_and_targets(sample)
    assert torch.equal(positions, sample.is_masked) and positions.any()
    assert torch.equal(targets, sample.targets[sample.is_masked]) and (targets != IGNORE_INDEX).all()
    expected_rows = torch.arange(4)[:, None].expand_as(positions)[positions]
    assert torch.equal(rows, expected_rows)


def test_a_perfect_predictor_has_zero_loss():
    for seed in range(3):
        sample, t = make_sample(seed=seed)
        _, targets, _ = masked_positions_and_targets(sample)
        assert targets.numel() > 0 and sample.slot_gaps.sum() > 0
        perfect = loss_of(sample, t, 100.0 * F.one_hot(targets, VOCAB).float(), sample.slot_gaps.float())
        assert perfect.loss.item() < 1e-6
        wrong = loss_of(
            sample, t, torch.zeros(targets.numel(), VOCAB), torch.ones_like(sample.slot_gaps).float()
        )
        assert wrong.unmask_loss > 0.1 and wrong.insertion_loss > 0.01
        assert wrong.loss == pytest.approx((wrong.unmask_loss + wrong.insertion_loss).item())


def test_loss_matches_the_formula():
    """Two rows, hand-computed: weights kappa(t), one division by the normaliser."""
    t = torch.tensor([0.25, 0.5])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
    targets, rows = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1])
    gaps = torch.tensor([[0, 2, 0], [1, 0, 0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    g_hat = torch.tensor([[0.5, 2.0, 1.0], [1.0, 0.0, float("nan")]])
    quadratic = {"name": "polynomial", "power": 2.0}
    out = flexmdm_loss(logits, targets, rows, g_hat, gaps, valid, t, quadratic, "linear", normalizer=10)
    ce = F.cross_entropy(logits, targets, reduction="none")
    w = 1.0 / (1.0 - t)  # kappa of the linear unmasking schedule
    expected_unmask = (w[0] * (ce[0] + ce[1]) + w[1] * ce[2]) / 10
    w = 2 * t / (1.0 - t**2)  # kappa of the quadratic insertion schedule

    def d(x, y):
        x, y = max(x, 1e-6), max(y, 1e-6)
        return y - x + x * (math.log(x) - math.log(y))

    expected_insertion = (w[0] * (d(0, 0.5) + d(2, 2.0) + d(0, 1.0)) + w[1] * (d(1, 1.0) + d(0, 0.0))) / 10
    assert out.unmask_loss.item() == pytest.approx(expected_unmask.item(), rel=1e-5)
    assert out.insertion_loss.item() == pytest.approx(expected_insertion.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx((expected_unmask + expected_insertion).item(), rel=1e-5)


def test_constant_insertion_weighting_drops_kappa_from_the_gap_loss_only():
    t = torch.tensor([0.25, 0.9])
    logits, targets, rows = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), torch.tensor([0, 1])
    gaps = torch.tensor([[0, 2], [1, 0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    g_hat = torch.tensor([[0.5, 1.0], [2.0, 0.25]])
    args = (logits, targets, rows, g_hat, gaps, valid, t, "linear", "linear")
    elbo = flexmdm_loss(*args, normalizer=4)
    constant = flexmdm_loss(*args, normalizer=4, insertion_weighting="constant")
    divergence = poisson_bregman(gaps, g_hat)
    assert constant.insertion_loss.item() == pytest.approx(divergence.sum().item() / 4, rel=1e-5)
    kappa = 1.0 / (1.0 - t)
    assert elbo.insertion_loss.item() == pytest.approx((divergence.sum(1) * kappa).sum().item() / 4, rel=1e-5)
    assert constant.unmask_loss.item() == pytest.approx(elbo.unmask_loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="insertion_weighting"):
        flexmdm_loss(*args, normalizer=4, insertion_weighting="uniform")


def test_loss_is_invariant_to_extra_right_padding():
    narrow, t = make_sample()
    wide, _ = make_sample(extra_pad=9)
    assert torch.equal(wide.slot_gaps[:, :17], narrow.slot_gaps)
    n = int(narrow.is_masked.sum())
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(n, VOCAB, generator=g)
    g_hat = torch.rand(4, 17, generator=g) * 3
    junk = torch.full((4, 9), float("nan"))
    g_hat_wide = torch.cat([g_hat, junk], dim=1).requires_grad_(True)
    a = loss_of(narrow, t, logits, g_hat)
    b = loss_of(wide, t, logits, g_hat_wide)
    assert a.loss.item() > 0
    assert torch.allclose(a.loss, b.loss) and torch.allclose(a.insertion_loss, b.insertion_loss)
    b.loss.backward()
    assert torch.isfinite(g_hat_wide.grad).all() and (g_hat_wide.grad[:, 17:] == 0).all()


def test_weights_are_guarded_near_t_equals_one():
    sample, _ = make_sample()
    n = int(sample.is_masked.sum())
    logits = torch.zeros(n, VOCAB)
    g_hat = torch.ones_like(sample.slot_gaps).float()
    at_one = loss_of(sample, torch.ones(4), logits, g_hat)
    at_guard = loss_of(sample, torch.full((4,), 1 - 1e-3), logits, g_hat)
    assert torch.isfinite(at_one.loss) and torch.allclose(at_one.loss, at_guard.loss)


def test_normalizer():
    sample, t = make_sample()
    n = int(sample.is_masked.sum())
    logits = torch.zeros(n, VOCAB)
    g_hat = torch.ones_like(sample.slot_gaps).float()
    default = loss_of(sample, t, logits, g_hat)
    count = int(sample.non_prompt_lengths.sum())
    assert count == 16 + 11 + 7 + 13 - 4 * 3
    explicit = loss_of(sample, t, logits, g_hat, normalizer=2 * count)
    assert explicit.loss.item() == pytest.approx(default.loss.item() / 2, rel=1e-6)
    _, targets, rows = masked_positions_and_targets(sample)
    with pytest.raises(ValueError, match="normalizer="):
        flexmdm_loss(logits, targets, rows, g_hat, sample.slot_gaps, sample.slot_valid, t, ALPHA, BETA)
