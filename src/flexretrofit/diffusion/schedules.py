"""Time schedules of the FlexMDM forward process: CDFs on [0, 1] for insertion (alpha) and unmasking (beta).

A schedule ``s`` gives the probability that an event (a token being inserted, or unmasked) has happened
by time ``t``: ``s(0)`` is (about) 0, ``s(1)`` is (about) 1, and ``s`` is increasing. The forward
process draws event times with :meth:`Schedule.inverse`; the loss and the sampler weight by the rate
factor ``kappa(t) = s'(t) / (1 - s(t))`` (:meth:`Schedule.rate`).

Every method is vectorised over a tensor of times, clamps its input into the valid range (so ``t`` in
{0, 1} never gives NaN or inf), and keeps float32/float64 inputs in their dtype (lower precision and
integer inputs are computed in float32).

Schedules are small frozen dataclasses, named in :data:`SCHEDULES`; :func:`build_schedule` turns a config
entry (``"linear"`` or ``{"name": "geometric", "min": 10.0, "max": 0.01}``) into one, and
:meth:`Schedule.to_dict` turns it back.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor

# Distance from t = 1 (and t = 0 where a derivative is singular there) at which times are clamped.
TIME_EPS = 1e-6


def _as_time(t: Tensor | float) -> Tensor:
    """A floating tensor of at least float32 precision (times near 1 need it)."""
    t = torch.as_tensor(t)
    if not t.is_floating_point() or torch.finfo(t.dtype).bits < 32:
        t = t.to(torch.float32)
    return t


class Schedule(abc.ABC):
    """A CDF ``s`` on [0, 1]: the probability that an event has happened by time ``t``.

    Subclasses implement :meth:`value`, :meth:`derivative` and :meth:`inverse` (inputs clamped into
    [0, 1]); override :meth:`survival` where ``1 - s(t)`` loses precision near ``t = 1``. Every tensor
    argument and result has the same shape (any shape, written ``[...]``).
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def value(self, t: Tensor | float) -> Tensor:
        """``s(t)`` for ``t`` ``[...]`` (clamped into [0, 1]) -> ``[...]``."""

    @abc.abstractmethod
    def derivative(self, t: Tensor | float) -> Tensor:
        """``s'(t)`` for ``t`` ``[...]`` (clamped into [0, 1]) -> ``[...]``."""

    @abc.abstractmethod
    def inverse(self, u: Tensor | float) -> Tensor:
        """``s^-1(u)`` for ``u`` ``[...]`` -> times in [0, 1] ``[...]``.

        ``u`` is clamped into ``[s(0), s(1)]``: below ``s(0)`` the inverse is 0, above ``s(1)`` it is 1.
        """

    def survival(self, t: Tensor | float) -> Tensor:
        """``1 - s(t)`` for ``t`` ``[...]`` -> ``[...]``."""
        return 1.0 - self.value(t)

    def rate(self, t: Tensor | float) -> Tensor:
        """Rate factor ``kappa(t) = s'(t) / (1 - s(t))`` for ``t`` ``[...]`` -> ``[...]``, always finite.

        ``t`` is clamped into ``[0, 1 - TIME_EPS]`` (TIME_EPS = 1e-6) first, so where ``kappa`` diverges at
        ``t = 1`` (every schedule with ``s(1) = 1``) ``rate(1)`` returns the large finite ``kappa(1 - 1e-6)``
        (about 1e6 for linear). Loss weights should clamp ``t`` further (``flexmdm_loss`` uses ``1 - 1e-3``).
        """
        t = _as_time(t).clamp(0.0, 1.0 - TIME_EPS)
        return self.derivative(t) / self.survival(t)

    def to_dict(self) -> dict:
        """The config entry that :func:`build_schedule` turns back into this schedule."""
        return {"name": self.name, **dataclasses.asdict(self)}


SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: make a :class:`Schedule` dataclass buildable by its ``name``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(
            f"{cls.__name__} must be a dataclass so that to_dict/build_schedule know its parameters."
        )
    if cls.name in SCHEDULES and SCHEDULES[cls.name] is not cls:
        raise ValueError(
            f"a schedule named {cls.name!r} is already registered ({SCHEDULES[cls.name].__name__})."
        )
    SCHEDULES[cls.name] = cls
    return cls


@register_schedule
@dataclasses.dataclass(frozen=True)
class LinearSchedule(Schedule):
    """``s(t) = t``; ``kappa(t) = 1 / (1 - t)``."""

    name: ClassVar[str] = "linear"

    def value(self, t: Tensor | float) -> Tensor:
        return _as_time(t).clamp(0.0, 1.0)

    def derivative(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(_as_time(t))

    def inverse(self, u: Tensor | float) -> Tensor:
        return _as_time(u).clamp(0.0, 1.0)


@register_schedule
@dataclasses.dataclass(frozen=True)
class GeometricSchedule(Schedule):
    """``s(t) = exp(-min^(1 - t) * max^t)`` with ``min > max > 0`` (the published retrofit: 10, 0.01).

    The exponent interpolates geometrically from ``min`` to ``max``, so ``s(0) = exp(-min)`` is slightly
    above 0 and ``s(1) = exp(-max)`` slightly below 1 (4.5e-5 and 0.990 for 10, 0.01). Sampling times
    through :meth:`inverse` therefore puts an atom of mass ``s(0)`` at t = 0 and ``1 - s(1)`` at t = 1.
    ``kappa`` stays finite on all of [0, 1] (5.87 at t = 0.5 for 10, 0.01).
    """

    name: ClassVar[str] = "geometric"
    min: float = 10.0
    max: float = 0.01

    def __post_init__(self) -> None:
        # Plain floats keep to_dict() JSON-friendly whatever the config handed in (ints, numpy, ...).
        object.__setattr__(self, "min", float(self.min))
        object.__setattr__(self, "max", float(self.max))
        if not (self.min > self.max > 0.0):
            raise ValueError(
                f"geometric schedule needs min > max > 0 (an increasing CDF), got min={self.min}, "
                f"max={self.max}; the published retrofit uses min=10.0, max=0.01."
            )

    def _exponent(self, t: Tensor) -> Tensor:
        """``r(t) = min^(1 - t) max^t`` (so ``s = exp(-r)``), computed in log space."""
        return torch.exp((1.0 - t) * math.log(self.min) + t * math.log(self.max))

    def value(self, t: Tensor | float) -> Tensor:
        return torch.exp(-self._exponent(_as_time(t).clamp(0.0, 1.0)))

    def survival(self, t: Tensor | float) -> Tensor:
        return -torch.expm1(-self._exponent(_as_time(t).clamp(0.0, 1.0)))

    def derivative(self, t: Tensor | float) -> Tensor:
        # s' = s * r * (ln min - ln max), since r' = r (ln max - ln min).
        r = self._exponent(_as_time(t).clamp(0.0, 1.0))
        return torch.exp(-r) * r * (math.log(self.min) - math.log(self.max))

    def inverse(self, u: Tensor | float) -> Tensor:
        u = _as_time(u).clamp(math.exp(-self.min), math.exp(-self.max))
        log_min, log_max = math.log(self.min), math.log(self.max)
        t = (log_min - torch.log(-torch.log(u))) / (log_min - log_max)
        return t.clamp(0.0, 1.0)  # rounding at the clamped ends


@register_schedule
@dataclasses.dataclass(frozen=True)
class CosineSchedule(Schedule):
    """``s(t) = 1 - cos(pi t / 2)``; ``kappa(t) = (pi / 2) tan(pi t / 2)``."""

    name: ClassVar[str] = "cosine"

    def value(self, t: Tensor | float) -> Tensor:
        # 1 - cos(x) cancels near t = 0; the equal 2 sin^2(x / 2) does not (and is exact at neither end).
        t = _as_time(t).clamp(0.0, 1.0)
        return torch.where(t < 0.5, 2.0 * torch.sin(0.25 * math.pi * t).square(), 1.0 - self.survival(t))

    def survival(self, t: Tensor | float) -> Tensor:
        return torch.cos(0.5 * math.pi * _as_time(t).clamp(0.0, 1.0))

    def derivative(self, t: Tensor | float) -> Tensor:
        return 0.5 * math.pi * torch.sin(0.5 * math.pi * _as_time(t).clamp(0.0, 1.0))

    def inverse(self, u: Tensor | float) -> Tensor:
        # The two forms of value(), inverted: acos(1 - u) loses precision for small u.
        u = _as_time(u).clamp(0.0, 1.0)
        small = (4.0 / math.pi) * torch.asin(torch.sqrt(0.5 * u))
        return torch.where(u < 0.5, small, (2.0 / math.pi) * torch.acos(1.0 - u))


@register_schedule
@dataclasses.dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """``s(t) = t^power`` with ``power > 0``; ``kappa(t) = power t^(power-1) / (1 - t^power)``.

    For ``power < 1`` the derivative diverges at t = 0; :meth:`derivative` evaluates it at ``TIME_EPS``
    there instead.
    """

    name: ClassVar[str] = "polynomial"
    power: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "power", float(self.power))
        if not self.power > 0.0:
            raise ValueError(f"polynomial schedule needs power > 0, got power={self.power}.")

    def value(self, t: Tensor | float) -> Tensor:
        return _as_time(t).clamp(0.0, 1.0).pow(self.power)

    def survival(self, t: Tensor | float) -> Tensor:
        # 1 - t^p = -expm1(p ln t): exact near t = 1, where 1 - t^p would cancel.
        t = _as_time(t).clamp(0.0, 1.0)
        return torch.where(t > 0, -torch.expm1(self.power * torch.log(t)), torch.ones_like(t))

    def derivative(self, t: Tensor | float) -> Tensor:
        low = TIME_EPS if self.power < 1.0 else 0.0
        return self.power * _as_time(t).clamp(low, 1.0).pow(self.power - 1.0)

    def inverse(self, u: Tensor | float) -> Tensor:
        return _as_time(u).clamp(0.0, 1.0).pow(1.0 / self.power)


def build_schedule(spec: str | dict | Schedule) -> Schedule:
    """Build a schedule from its name, its config dict, or return a :class:`Schedule` unchanged.

    Examples: ``build_schedule("linear")``, ``build_schedule({"name": "geometric", "min": 10.0, "max": 0.01})``,
    ``build_schedule({"name": "polynomial", "power": 3})``. Parameters left out take their defaults.
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(
                f"schedule spec {spec!r} has no 'name'; write e.g. {{'name': 'linear'}} "
                f"(known: {', '.join(sorted(SCHEDULES))})."
            )
        params = dict(spec)
        name = params.pop("name")
    else:
        raise TypeError(
            f"a schedule spec is a name, a dict with a 'name', or a Schedule; got {type(spec).__name__}."
        )
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(sorted(SCHEDULES))}.")
    cls = SCHEDULES[name]
    accepted = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"schedule {name!r} got unknown parameter(s) {unknown}; it accepts {accepted or 'no parameters'}."
        )
    return cls(**params)
