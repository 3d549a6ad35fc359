"""Samplers: flexible-length FlexMDM generation and infilling, and LLaDA's fixed-length MDM baseline."""

from flexretrofit.sampling.config import (
    CONFIDENCE_METHODS,
    REMASKING_METHODS,
    FlexGenerationConfig,
    MDMGenerationConfig,
)
from flexretrofit.sampling.flex import generate_flex, infill
from flexretrofit.sampling.mdm import generate_mdm, infill_mdm
from flexretrofit.sampling.methods import (
    SAMPLING_METHODS,
    SamplingMethod,
    build_generation_config,
    sampling_method,
    sampling_method_of,
)
from flexretrofit.sampling.sequences import GenerationOutput, GenerationStep
from flexretrofit.sampling.text import generate_text, infill_text

__all__ = [
    "CONFIDENCE_METHODS",
    "REMASKING_METHODS",
    "SAMPLING_METHODS",
    "SamplingMethod",
    "build_generation_config",
    "FlexGenerationConfig",
    "GenerationOutput",
    "GenerationStep",
    "MDMGenerationConfig",
    "generate_flex",
    "generate_mdm",
    "generate_text",
    "infill",
    "infill_mdm",
    "infill_text",
    "sampling_method",
    "sampling_method_of",
]
