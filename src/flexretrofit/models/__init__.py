"""Model classes: the native LLaDA backbone, the FlexMDM retrofit, loading by model_type (:mod:`.auto`), tokenizer
loading and LoRA presets."""

from flexretrofit.models.auto import MODEL_CLASSES, load_pretrained, resolve_dtype
from flexretrofit.models.checkpoint import CheckpointError, read_model_type
from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion, FlexMDMOutput
from flexretrofit.models.llada import LLaDAConfig, LLaDAModelLM, LLaDAOutput
from flexretrofit.tokenizer import TokenizerLoadError, load_tokenizer, prepare_tokenizer

__all__ = [
    "MODEL_CLASSES",
    "CheckpointError",
    "FlexMDMConfig",
    "FlexMDMForMaskedDiffusion",
    "FlexMDMOutput",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDAOutput",
    "load_pretrained",
    "TokenizerLoadError",
    "load_tokenizer",
    "prepare_tokenizer",
    "read_model_type",
    "resolve_dtype",
]
