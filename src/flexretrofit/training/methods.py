"""The training table: for each method (:data:`flexretrofit.methods.METHODS`, the ``model.kind`` of a recipe
config), the model it trains, how that model is loaded, its collator, its objective and how its export
is described. Training code looks the method up here instead of branching on it.

    flexmdm  FlexMDMForMaskedDiffusion  FlexMDMCollator  FlexMDMObjective  new modules (insert + unmask)
    mdm      LLaDAModelLM               MDMCollator      MDMObjective      fixed length (the LLaDA baseline)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from flexretrofit.data.collator import FlexMDMCollator, MDMCollator
from flexretrofit.methods import Method, method_name
from flexretrofit.models.auto import default_method, needs_retrofit
from flexretrofit.models.flexmdm import FlexMDMForMaskedDiffusion
from flexretrofit.models.llada import LLaDAModelLM
from flexretrofit.training.config import ConfigError, ModelConfig
from flexretrofit.training.objectives import FlexMDMObjective, MDMObjective


@dataclass(frozen=True)
class TrainingMethod:
    """One method's training pieces.

    Attributes:
        name: the method (``model.kind``).
        model_class: the class trained (inside PEFT with LoRA).
        collator_class / objective_class: built with ``for_model(model_config, ...)`` from the trained model's
            config, so ids and schedules have one source of truth.
        load: ``load(model, model_type, dtype)``: the model to train from ``model.init_from``, a checkpoint of
            ``model_type`` (already checked to be one this project loads).
        length_limit: ``length_limit(model, model_type, checkpoint_config)``: the longest sample it trains on,
            from the checkpoint's config.json alone (``ConfigError`` when the checkpoint cannot train as it).
        new_modules: the model adds trained modules to the LLaDA backbone (time embedding, AdaLN, insertion
            head): exported beside a LoRA adapter, and what the retrofit recipe creates.
        fixed_length: samples may be padded onto a fixed canvas (``data.canvas_length``).
        schedule_fields: fields of the model config the model card states.
        title / description: the model card's heading and first line.
    """

    name: Method
    model_class: type[PreTrainedModel]
    collator_class: type[FlexMDMCollator] | type[MDMCollator]
    objective_class: type[FlexMDMObjective] | type[MDMObjective]
    load: Callable[[ModelConfig, str, torch.dtype], nn.Module]
    length_limit: Callable[[ModelConfig, str, dict[str, Any]], int]
    new_modules: bool
    fixed_length: bool
    schedule_fields: tuple[str, ...]
    title: str
    description: str


def _load_flexmdm(model: ModelConfig, model_type: str, dtype: torch.dtype) -> nn.Module:
    """A fresh retrofit of a LLaDA checkpoint (with ``model.flex_config``), or a FlexMDM to keep training."""
    if needs_retrofit(model_type, "flexmdm"):
        return FlexMDMForMaskedDiffusion.from_llada(
            model.init_from, flex_config=model.flex_config, dtype=dtype
        )
    if model.flex_config:
        raise ConfigError(
            f"model.flex_config only configures a fresh retrofit, but {model.init_from} is already a FlexMDM "
            "(its config fixes schedules and modules); remove model.flex_config."
        )
    return FlexMDMForMaskedDiffusion.from_pretrained(model.init_from, dtype=dtype)


def _load_mdm(model: ModelConfig, model_type: str, dtype: torch.dtype) -> nn.Module:
    """The LLaDA backbone, which projects to the vocabulary only at MASK positions."""
    return LLaDAModelLM.from_pretrained(model.init_from, dtype=dtype)


def _flexmdm_length_limit(model: ModelConfig, model_type: str, checkpoint: dict[str, Any]) -> int:
    """A retrofitted LLaDA gives up one position to the appended slot; a saved FlexMDM states its own."""
    if needs_retrofit(model_type, "flexmdm"):
        limit = int(checkpoint["max_sequence_length"])
        return min(limit - 1, int(model.flex_config.get("max_length") or limit - 1))
    return int(checkpoint.get("max_length") or checkpoint["backbone_config"]["max_sequence_length"] - 1)


def _mdm_length_limit(model: ModelConfig, model_type: str, checkpoint: dict[str, Any]) -> int:
    """An MDM uses all ``max_sequence_length`` positions of a LLaDA checkpoint."""
    if default_method(model_type) != "mdm":
        raise ConfigError(
            f"model.init_from={model.init_from} is a FlexMDM but model.kind={model.kind!r}; train an MDM "
            "baseline from a LLaDA checkpoint."
        )
    return int(checkpoint["max_sequence_length"])


TRAINING_METHODS: dict[Method, TrainingMethod] = {
    "flexmdm": TrainingMethod(
        name="flexmdm",
        model_class=FlexMDMForMaskedDiffusion,
        collator_class=FlexMDMCollator,
        objective_class=FlexMDMObjective,
        load=_load_flexmdm,
        length_limit=_flexmdm_length_limit,
        new_modules=True,
        fixed_length=False,
        schedule_fields=("insertion_schedule", "unmask_schedule"),
        title="FlexMDM",
        description=(
            "A masked-diffusion language model that inserts and unmasks tokens (flexible length), retrofitted "
            "from a LLaDA checkpoint."
        ),
    ),
    "mdm": TrainingMethod(
        name="mdm",
        model_class=LLaDAModelLM,
        collator_class=MDMCollator,
        objective_class=MDMObjective,
        load=_load_mdm,
        length_limit=_mdm_length_limit,
        new_modules=False,
        fixed_length=True,
        schedule_fields=(),
        title="LLaDA MDM",
        description="A LLaDA masked-diffusion language model (fixed length, unmask only), fine-tuned as a baseline.",
    ),
}


def training_method(method: str | PreTrainedConfig, *, key: str = "model.kind") -> TrainingMethod:
    """The table row for a method name (old spellings read, see :mod:`flexretrofit.methods`), or for the config
    of a model being trained (by its ``model_type``: a LLaDA trains as the MDM baseline, a FlexMDM as a FlexMDM).

    Raises:
        ValueError: an unknown name (one line naming ``key`` and the choices).
    """
    if isinstance(method, str):
        return TRAINING_METHODS[method_name(method, key=key)]
    return TRAINING_METHODS[default_method(method.model_type)]
