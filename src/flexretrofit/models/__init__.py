"""Model classes: the native LLaDA backbone, the FlexMDM retrofit, tokenizer loading and LoRA presets."""

from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion, FlexMDMOutput
from flexretrofit.models.llada import LLaDAConfig, LLaDAModelLM, LLaDAOutput
from flexretrofit.models.tokenizer import load_tokenizer, prepare_tokenizer

__all__ = [
    "FlexMDMConfig",
    "FlexMDMForMaskedDiffusion",
    "FlexMDMOutput",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDAOutput",
    "load_tokenizer",
    "prepare_tokenizer",
]
