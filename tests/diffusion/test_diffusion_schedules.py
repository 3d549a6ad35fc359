import math

import pytest
import torch

from flexretrofit.diffusion import (
    SCHEDULES,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    PolynomialSchedule,
    build_schedule,
)

ALL_SCHEDULES = [
    LinearSchedule(),
    GeometricSchedule(min=10.0, max=0.01),
    GeometricSchedule(min=3.0, max=0.5),
    CosineSchedule(),
    PolynomialSchedule(power=2.0),
    PolynomialSchedule(power=0.5),
]
IDS = [str(schedule.to_dict()) for schedule in ALL_SCHEDULES]
INTERIOR = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=IDS)
def test_inverse_round_trip(schedule):
    assert torch.allclose(schedule.inverse(schedule.value(INTERIOR)), INTERIOR, atol=1e-9)
    lo, hi = (
        schedule.value(torch.tensor(0.0, dtype=torch.float64)),
        schedule.value(torch.tensor(1.0, dtype=torch.float64)),
    )
    u = lo + (hi - lo) * torch.linspace(0.0, 1.0, 33, dtype=torch.float64)
    assert torch.allclose(schedule.value(schedule.inverse(u)), u, atol=1e-9)


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=IDS)
def test_value_is_an_increasing_cdf(schedule):
    values = schedule.value(torch.linspace(0.0, 1.0, 101, dtype=torch.float64))
    assert (values.diff() > 0).all()
    assert 0.0 <= values[0] and values[-1] <= 1.0
    if not isinstance(schedule, GeometricSchedule):  # the geometric one only approaches 0 and 1
        assert values[0] == 0.0 and values[-1].item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=IDS)
def test_derivative_matches_finite_differences(schedule):
    h = 1e-6
    numeric = (schedule.value(INTERIOR + h) - schedule.value(INTERIOR - h)) / (2 * h)
    assert torch.allclose(schedule.derivative(INTERIOR), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=IDS)
def test_rate_matches_its_definition(schedule):
    expected = schedule.derivative(INTERIOR) / (1.0 - schedule.value(INTERIOR))
    assert torch.allclose(schedule.rate(INTERIOR), expected, rtol=1e-9)


def test_closed_forms_of_the_rate():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(LinearSchedule().rate(t), 1.0 / (1.0 - t))
    assert torch.allclose(CosineSchedule().rate(t), 0.5 * math.pi * torch.tan(0.5 * math.pi * t))
    assert torch.allclose(PolynomialSchedule(power=3.0).rate(t), 3.0 * t**2 / (1.0 - t**3))


def test_published_geometric_numbers():
    schedule = GeometricSchedule(min=10.0, max=0.01)
    t = torch.tensor([0.0, 0.5, 1.0])
    values = schedule.value(t)
    assert values[0].item() == pytest.approx(math.exp(-10.0), rel=1e-4)
    assert values[0].item() == pytest.approx(4.54e-5, rel=1e-2)
    assert values[2].item() == pytest.approx(0.990, abs=5e-4)
    assert round(schedule.rate(t)[1].item(), 2) == 5.87
    # The inverse clamps u into [alpha(0), alpha(1)], so it always returns a time in [0, 1].
    assert schedule.inverse(torch.tensor([0.0, 1e-6, 0.995, 1.0])).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_finite_at_the_ends(schedule, dtype):
    t = torch.tensor([0.0, 1.0], dtype=dtype)
    for method in (schedule.value, schedule.derivative, schedule.inverse, schedule.rate):
        out = method(t)
        assert torch.isfinite(out).all(), (method.__name__, out)
    # Out-of-range inputs are clamped, not extrapolated.
    assert torch.equal(schedule.value(torch.tensor([-0.5, 1.5])), schedule.value(torch.tensor([0.0, 1.0])))
    # Linear-type schedules diverge at t = 1; rate stays finite and large there.
    assert schedule.rate(torch.tensor(1.0)) >= schedule.rate(torch.tensor(0.9))


def test_dtype_and_shape_are_kept():
    t = torch.rand(3, 4, dtype=torch.float64)
    for schedule in ALL_SCHEDULES:
        for method in (schedule.value, schedule.derivative, schedule.inverse, schedule.rate):
            out = method(t)
            assert out.shape == (3, 4) and out.dtype == torch.float64
    assert LinearSchedule().value(0.25).dtype == torch.float32


def test_build_schedule_from_specs():
    assert build_schedule("linear") == LinearSchedule()
    assert build_schedule({"name": "geometric", "min": 10, "max": 0.01}) == GeometricSchedule(10.0, 0.01)
    assert build_schedule({"name": "polynomial"}) == PolynomialSchedule(power=2.0)
    cosine = CosineSchedule()
    assert build_schedule(cosine) is cosine
    for schedule in ALL_SCHEDULES:
        assert build_schedule(schedule.to_dict()) == schedule
    assert GeometricSchedule().to_dict() == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert set(SCHEDULES) == {"linear", "geometric", "cosine", "polynomial"}


def test_build_schedule_errors_say_what_to_do():
    with pytest.raises(ValueError, match="unknown schedule 'sqrt'.*cosine, geometric, linear, polynomial"):
        build_schedule("sqrt")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['power'\]"):
        build_schedule({"name": "geometric", "power": 2.0})
    with pytest.raises(ValueError, match="has no 'name'"):
        build_schedule({"min": 10.0})
    with pytest.raises(TypeError):
        build_schedule(3.0)
    with pytest.raises(ValueError, match="min > max > 0"):
        build_schedule({"name": "geometric", "min": 0.01, "max": 10.0})
    with pytest.raises(ValueError, match="power > 0"):
        PolynomialSchedule(power=0.0)
