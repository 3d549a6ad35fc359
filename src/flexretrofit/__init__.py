"""flexretrofit: retrofit pretrained masked diffusion LMs (LLaDA) into flexible-length FlexMDMs.

Importing the package registers the native classes with the transformers Auto classes, so
``AutoModel.from_pretrained("GSAI-ML/LLaDA-8B-Base")`` returns :class:`LLaDAModelLM` without remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from flexretrofit.models import (
    FlexMDMConfig,
    FlexMDMForMaskedDiffusion,
    LLaDAConfig,
    LLaDAModelLM,
    load_tokenizer,
)
from flexretrofit.sampling import FlexGenerationConfig, MDMGenerationConfig

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    for config_class, model_class in (
        (LLaDAConfig, LLaDAModelLM),
        (FlexMDMConfig, FlexMDMForMaskedDiffusion),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForMaskedLM.register(config_class, model_class, exist_ok=True)


_register_auto_classes()

__all__ = [
    "FlexGenerationConfig",
    "FlexMDMConfig",
    "FlexMDMForMaskedDiffusion",
    "LLaDAConfig",
    "LLaDAModelLM",
    "MDMGenerationConfig",
    "load_tokenizer",
]
