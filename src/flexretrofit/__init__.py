"""flexretrofit: retrofit pretrained masked diffusion LMs (LLaDA) into flexible-length FlexMDMs.

Importing the package registers the native classes with the transformers Auto classes, so
``AutoModel.from_pretrained("GSAI-ML/LLaDA-8B-Base")`` returns :class:`LLaDAModelLM` without remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from flexretrofit.models import (
    MODEL_CLASSES,
    FlexMDMConfig,
    FlexMDMForMaskedDiffusion,
    LLaDAConfig,
    LLaDAModelLM,
    load_tokenizer,
)
from flexretrofit.sampling import FlexGenerationConfig, MDMGenerationConfig

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    for model_type, model_class in MODEL_CLASSES.items():
        config_class = model_class.config_class
        AutoConfig.register(model_type, config_class, exist_ok=True)
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
