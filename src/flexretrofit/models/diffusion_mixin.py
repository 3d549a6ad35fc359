"""What both model classes add to transformers' ``PreTrainedModel``: checked loading and a sampler config.

Mixed in before ``PreTrainedModel`` (``class LLaDAModelLM(DiffusionModelMixin, LLaDAPreTrainedModel)``):

- ``from_pretrained`` checks the checkpoint first (:mod:`.checkpoint`: model type, required and valid
  config fields, shards inside the folder, complete safetensors files of floating-point tensors), refuses
  missing or unexpected keys and NaN/inf weights, never runs remote code, and loads
  ``generation_config.json`` as the class's sampler config;
- ``can_generate()`` is True, so transformers builds ``model.generation_config`` (a
  :class:`~flexretrofit.sampling.FlexGenerationConfig` or :class:`~flexretrofit.sampling.MDMGenerationConfig`)
  when the model is created and ``save_pretrained`` writes it. ``generate`` itself is each class's own
  diffusion sampler, not transformers' autoregressive ``GenerationMixin.generate``, which is not inherited.
"""

from __future__ import annotations

import os
from typing import ClassVar

from flexretrofit.models.checkpoint import (
    DOWNLOAD_KWARGS,
    CheckpointKind,
    check_checkpoint,
    check_finite_weights,
    raise_on_key_mismatch,
)
from flexretrofit.sampling.config import load_generation_config


class DiffusionModelMixin:
    """Checked ``from_pretrained`` and a saved sampler ``generation_config`` (see the module docstring)."""

    checkpoint_kind: ClassVar[CheckpointKind]
    architecture_name: ClassVar[str]

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """Load a checkpoint of this class (hub id or local folder); raises on missing or unexpected keys.

        ``generation_config=`` replaces the saved ``generation_config.json``; without either the sampler
        defaults apply. Remote code in ``auto_map`` is never executed.
        """
        generation_config = kwargs.pop("generation_config", None)
        config_class = cls.generation_config_class
        if generation_config is not None and not isinstance(generation_config, config_class):
            raise TypeError(
                f"{cls.__name__}.from_pretrained takes generation_config as a {config_class.__name__}, got "
                f"{type(generation_config).__name__}"
            )
        return_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("trust_remote_code", False)
        download = {name: kwargs[name] for name in DOWNLOAD_KWARGS if kwargs.get(name) is not None}
        check_checkpoint(pretrained_model_name_or_path, cls.checkpoint_kind, download, cls.config_class)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        raise_on_key_mismatch(pretrained_model_name_or_path, info, cls.architecture_name)
        check_finite_weights(model, pretrained_model_name_or_path)
        if generation_config is None:
            generation_config = load_generation_config(
                pretrained_model_name_or_path, config_class, **download
            )
        model.generation_config = generation_config
        return (model, info) if return_info else model
