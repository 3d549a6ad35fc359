"""Check ``lora.targets`` against the model's module names before any weight is loaded.

The model is built from ``model.init_from``'s config alone, on the meta device (no memory, no weights read), so
a misspelt target group or one the architecture lacks fails in a second, not after loading 16 GB.
"""

from __future__ import annotations

import re

import torch

from flexretrofit.models.auto import load_config, method_config, model_class
from flexretrofit.models.lora import LORA_PRESETS, lora_target_regex
from flexretrofit.training.config import ConfigError, LoRAConfig, ModelConfig


def module_names(model: ModelConfig) -> list[str]:
    """Every module name of the model ``build_model`` would build from ``model`` (LoRA not yet applied)."""
    config = load_config(model.init_from)
    try:  # the checkpoint's own config, or the FlexMDM config of a fresh retrofit around it
        config = method_config(config, model.kind, model.flex_config)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"model.flex_config={model.flex_config} is not a valid FlexMDM config: {error}"
        ) from None
    with torch.device("meta"):
        skeleton = model_class(config.model_type)(config)
    return [name for name, _ in skeleton.named_modules()]


def check_lora_targets(model: ModelConfig, lora: LoRAConfig) -> None:
    """Every group in ``lora.targets`` (a preset or a list) names at least one module of the model.

    Raises:
        ConfigError: an unknown preset or group, or a group that matches no module (with the choices).
    """
    targets = lora.targets
    try:
        lora_target_regex(targets)
    except ValueError as error:
        raise ConfigError(f"lora.targets={targets!r}: {error}.") from None
    groups = LORA_PRESETS[targets] if isinstance(targets, str) else tuple(targets)
    if not groups:
        raise ConfigError(
            f"lora.targets is empty; use a preset ({', '.join(sorted(LORA_PRESETS))}) or a list."
        )
    names = module_names(model)
    unmatched = [g for g in groups if not any(re.fullmatch(lora_target_regex([g]), n) for n in names)]
    if unmatched:
        raise ConfigError(
            f"lora.targets group(s) {unmatched} match no module of {model.init_from} (model.kind={model.kind}); "
            f"drop them or use a preset ({', '.join(sorted(LORA_PRESETS))})."
        )
