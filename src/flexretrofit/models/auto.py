"""Loading by ``model_type``: the one table from a checkpoint's config.json ``model_type`` to its model class
and to the method it is sampled and trained with by default.

    model_type  class                        method
    llada       LLaDAModelLM                 mdm      (the pretrained backbone, LLaDA's fixed-length sampler)
    flexmdm     FlexMDMForMaskedDiffusion    flexmdm  (the retrofit)

Model files never import each other through this module; everything that must pick a class by model_type
(loading, the LoRA target check, the transformers Auto registration) reads :data:`MODEL_CLASSES`.
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel

from flexretrofit.methods import Method
from flexretrofit.models.checkpoint import DOWNLOAD_KWARGS, CheckpointError, read_model_type
from flexretrofit.models.flexmdm import FlexMDMForMaskedDiffusion
from flexretrofit.models.llada import LLaDAModelLM

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llada": LLaDAModelLM,
    "flexmdm": FlexMDMForMaskedDiffusion,
}
MODEL_TYPE_METHODS: dict[str, Method] = {"llada": "mdm", "flexmdm": "flexmdm"}


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
