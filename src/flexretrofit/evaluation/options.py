"""Old import path of the evaluation option tables: they are in :mod:`flexretrofit.evaluation.settings`
(run and sampler options) and in each task's module of :mod:`flexretrofit.evaluation.tasks` (its own
options, sampler defaults and presets)."""

from flexretrofit.evaluation.settings import (
    BENCHMARKS,
    DEFAULT_SAMPLER_SETTINGS,
    GSM8K,
    INFILL,
    NOT_IN_FINGERPRINT,
    OPTIONS,
    PRESETS,
    SAMPLER_SCOPES,
    Option,
    int_or_none,
    options_for,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_SAMPLER_SETTINGS",
    "GSM8K",
    "INFILL",
    "NOT_IN_FINGERPRINT",
    "OPTIONS",
    "PRESETS",
    "SAMPLER_SCOPES",
    "Option",
    "int_or_none",
    "options_for",
]
