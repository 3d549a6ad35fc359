"""Loading by ``model_type``: the one table from a checkpoint's config.json ``model_type`` to its model class
and to the methods it is sampled and trained with.

    model_type  class                        methods (the first is its default)
    llada       LLaDAModelLM                 mdm, flexmdm by a fresh retrofit (FlexMDMForMaskedDiffusion.from_llada)
    flexmdm     FlexMDMForMaskedDiffusion    flexmdm, mdm (the FlexMDM used as a fixed-length MDM)

Model files never import each other through this module; everything that must pick a class by model_type
(loading, the LoRA target check, the transformers Auto registration) reads :data:`MODEL_CLASSES`.
"""

from __future__ import annotations

import os

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from flexretrofit.methods import Method, method_name
from flexretrofit.models.checkpoint import DOWNLOAD_KWARGS, CheckpointError, read_model_type
from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion
from flexretrofit.models.llada import LLaDAModelLM

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llada": LLaDAModelLM,
    "flexmdm": FlexMDMForMaskedDiffusion,
}
# The method each model_type is sampled (and trained) with unless told otherwise.
MODEL_TYPE_METHODS: dict[str, Method] = {"llada": "mdm", "flexmdm": "flexmdm"}
# (checkpoint model_type, method) pairs that build a new FlexMDM around the checkpoint's LLaDA weights.
RETROFITS: frozenset[tuple[str, Method]] = frozenset({("llada", "flexmdm")})


def model_class(model_type: str, source: str | os.PathLike = "the checkpoint") -> type[PreTrainedModel]:
    """The class for ``model_type``.

    Raises:
        CheckpointError: a model type this project does not load (one line naming ``source``).
    """
    if model_type not in MODEL_CLASSES:
        raise CheckpointError(
            f"{source} holds a model of type {model_type!r}; this project loads "
            f"{' and '.join(map(repr, MODEL_CLASSES))} checkpoints"
        )
    return MODEL_CLASSES[model_type]


def default_method(model_type: str) -> Method:
    """The method a checkpoint of ``model_type`` is sampled with unless told otherwise."""
    return MODEL_TYPE_METHODS[model_type]


def method_model_class(method: str) -> type[PreTrainedModel]:
    """The class whose checkpoints run ``method`` by default (``flexmdm``: the FlexMDM, ``mdm``: LLaDA)."""
    name = method_name(method)
    return next(MODEL_CLASSES[kind] for kind, default in MODEL_TYPE_METHODS.items() if default == name)


def needs_retrofit(model_type: str, method: str) -> bool:
    """True when a ``model_type`` checkpoint runs as ``method`` only once retrofitted (a LLaDA as a FlexMDM)."""
    return (model_type, method_name(method)) in RETROFITS


def load_config(pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> PreTrainedConfig:
    """The config.json of a checkpoint as its class's config (:class:`LLaDAConfig` / :class:`FlexMDMConfig`),
    without loading any weight. ``kwargs`` go to ``from_pretrained`` (download options).

    Raises:
        FileNotFoundError / CheckpointError: as :func:`load_pretrained`.
    """
    download = {name: kwargs[name] for name in DOWNLOAD_KWARGS if kwargs.get(name) is not None}
    model_type = read_model_type(pretrained_model_name_or_path, **download)
    config_class = model_class(model_type, pretrained_model_name_or_path).config_class
    return config_class.from_pretrained(pretrained_model_name_or_path, **kwargs)


def method_config(config: PreTrainedConfig, method: str, flex_config: dict | None = None) -> PreTrainedConfig:
    """The config of the model that runs ``method`` from a checkpoint of ``config``: the checkpoint's own, or
    for a retrofit a :class:`FlexMDMConfig` around it with ``flex_config``'s fields (schedules, group size, ...).

    Raises:
        ValueError / TypeError: ``flex_config`` is not a valid FlexMDM config.
    """
    if needs_retrofit(config.model_type, method):
        return FlexMDMConfig(backbone_config=config, **(flex_config or {}))
    return config


def load_pretrained(pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """The model a checkpoint holds, by its config.json ``model_type``: a :class:`LLaDAModelLM` (``llada``)
    or a :class:`FlexMDMForMaskedDiffusion` (``flexmdm``). ``kwargs`` go to ``from_pretrained``.

    Raises:
        FileNotFoundError / CheckpointError: as :func:`~flexretrofit.models.checkpoint.read_model_type`, or
            for any other model type.
    """
    download = {name: kwargs[name] for name in DOWNLOAD_KWARGS if kwargs.get(name) is not None}
    model_type = read_model_type(pretrained_model_name_or_path, **download)
    return model_class(model_type, pretrained_model_name_or_path).from_pretrained(
        pretrained_model_name_or_path, **kwargs
    )


def resolve_dtype(name: str | torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype to load a model with on ``device``: ``"auto"`` is bfloat16 on a GPU that supports it, else
    float32; any other name is a torch dtype (``"bfloat16"``, ``"torch.float16"``, or a ``torch.dtype``).

    Raises:
        ValueError: ``name`` is not a torch dtype (``"float8"``, ``"zeros"``, ...).
    """
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        gpu_bf16 = torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype={name!r} is not a torch dtype; use auto, float32, bfloat16 or float16")
    return dtype
