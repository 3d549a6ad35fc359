"""The sampling table: for each method (:data:`flexretrofit.methods.METHODS`), its config class, its
generator and its infiller. Callers look the method up here instead of branching on it.

    flexmdm  FlexGenerationConfig  generate_flex  infill       (flexible length: insert MASKs, unmask them)
    mdm      MDMGenerationConfig   generate_mdm   infill_mdm   (LLaDA's fixed-length sampler)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from flexretrofit.methods import Method, method_name
from flexretrofit.sampling.config import FlexGenerationConfig, MDMGenerationConfig
from flexretrofit.sampling.flex import generate_flex, infill
from flexretrofit.sampling.mdm import generate_mdm, infill_mdm
from flexretrofit.sampling.sequences import GenerationOutput

GenerationConfig = FlexGenerationConfig | MDMGenerationConfig


@dataclass(frozen=True)
class SamplingMethod:
    """One method's sampler: ``generate(model, input_ids, attention_mask, generation_config, **overrides)``
    and ``infill(model, prefix_ids, suffix_ids, generation_config, **overrides)``, both returning a
    :class:`GenerationOutput`; ``config_class`` holds the sampler's settings."""

    name: Method
    config_class: type[FlexGenerationConfig] | type[MDMGenerationConfig]
    generate: Callable[..., GenerationOutput]
    infill: Callable[..., GenerationOutput]


SAMPLING_METHODS: dict[Method, SamplingMethod] = {
    "flexmdm": SamplingMethod("flexmdm", FlexGenerationConfig, generate_flex, infill),
    "mdm": SamplingMethod("mdm", MDMGenerationConfig, generate_mdm, infill_mdm),
}
# The sampler of a model that carries no sampler config of its own.
DEFAULT_METHOD: Method = "flexmdm"


def sampling_method(method: str | GenerationConfig, *, key: str = "method") -> SamplingMethod:
    """The table row for a method name (old spellings read, see :mod:`flexretrofit.methods`) or for a
    generation config instance (by its class).

    Raises:
        ValueError: an unknown name (one line naming ``key`` and the choices).
        TypeError: an object that is neither a name nor one of the two config classes.
    """
    if isinstance(method, str):
        return SAMPLING_METHODS[method_name(method, key=key)]
    for row in SAMPLING_METHODS.values():
        if type(method) is row.config_class:
            return row
    raise TypeError(f"{key} must be a method name or a generation config, got {type(method).__name__}")


def sampling_method_of(model: nn.Module, generation_config: GenerationConfig | None = None) -> SamplingMethod:
    """The row that samples ``model``: the method of ``generation_config``, else of the model's own
    ``generation_config`` (the one saved with it), else :data:`DEFAULT_METHOD` (whose sampler refuses a model
    it cannot run, naming the one that can)."""
    for config in (generation_config, getattr(model, "generation_config", None)):
        if isinstance(config, GenerationConfig):  # a plain transformers GenerationConfig names no method
            return sampling_method(config)
    return SAMPLING_METHODS[DEFAULT_METHOD]


def build_generation_config(
    method: str, settings: Mapping[str, Any], *, hidden_fields: tuple[str, ...] = ()
) -> GenerationConfig:
    """The method's sampler config from a flat dict of its fields (``steps``, ``confidence``, ...).

    ``hidden_fields`` are left out of the error message's list of accepted fields (ones a caller sets itself).

    Raises:
        ValueError: an unknown method, or a field the sampler does not have (named in the message).
    """
    row = sampling_method(method)
    fields = row.config_class.sampler_fields
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        accepted = ", ".join(f for f in fields if f not in hidden_fields)
        raise ValueError(f"{unknown} are not settings of the {row.name} sampler; it takes {accepted}")
    return row.config_class(**dict(settings))
