"""The model card (``README.md``) every export holds: Hugging Face front matter, then what it is and how to load it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flexretrofit.training.config import RecipeConfig
from flexretrofit.training.methods import training_method


def _hub_id(name_or_path: str) -> str | None:
    """``name_or_path`` if it reads as a hub id (``owner/name``, not a local folder), else None."""
    parts = name_or_path.split("/")
    if Path(name_or_path).exists() or len(parts) != 2 or name_or_path.startswith((".", "~")):
        return None
    return name_or_path


def _sources(config: RecipeConfig) -> list[str]:
    out = []
    for source in config.data.sources:
        where = source.hub if source.hub is not None else source.path
        names = where if isinstance(where, list) else [where]
        extra = f" (config {source.name}, split {source.split})" if source.hub is not None else ""
        weight = f", weight {source.weight:g}" if len(config.data.sources) > 1 else ""
        out.extend(f"`{name}`{extra}{weight}" for name in names)
    return out


def model_card(
    config: RecipeConfig,
    step: int,
    lora_mode: str,
    model_config: dict[str, Any] | None = None,
) -> str:
    """The ``README.md`` text of an export.

    Args:
        config: the recipe config the model was trained with (dumped in full in the card).
        step: optimizer steps trained.
        lora_mode: ``merge`` or ``adapter`` (the export layout the card's loading snippet is for).
        model_config: the trained model's config (``config.to_dict()``), for the schedules.
    """
    method = training_method(config.model.kind)
    init_from = config.model.init_from
    adapter = lora_mode == "adapter" and config.lora.enabled
    tags = ["flexretrofit", "masked-diffusion", "llada", method.name]
    if config.lora.enabled:
        tags.append("lora")
    front: dict[str, Any] = {"library_name": "flexretrofit"}
    hub_base = _hub_id(init_from)
    if hub_base is not None:
        front["base_model"] = hub_base
    front.update(tags=tags, pipeline_tag="text-generation")

    model_config = model_config or {}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {method.title} trained with flexretrofit",
        "",
        method.description,
        "",
        f"- **Base model:** `{init_from}`",
        f"- **Training:** {step} optimizer steps of {config.train.max_steps}, global batch "
        f"{config.train.global_batch_size}, lr {config.optim.lr:g}, "
        + (f"LoRA r={config.lora.r} on `{config.lora.targets}`" if config.lora.enabled else "all weights"),
        f"- **Data:** format `{config.data.format}`, max length {config.data.max_length}: "
        + ", ".join(_sources(config)),
    ]
    lines += [  # "- **Insertion schedule:** `{...}`"
        f"- **{field.replace('_', ' ').capitalize()}:** `{json.dumps(model_config.get(field))}`"
        for field in method.schedule_fields
    ]
    lines += ["", "## How to load", "", "```python", "import flexretrofit  # registers the model classes"]
    if adapter:
        lines += [
            "from flexretrofit.training import load_adapter_export",
            "",
            'model = load_adapter_export("<this folder>")  # base model + LoRA adapter'
            + (" + new FlexMDM modules" if method.new_modules else ""),
            "# the base model with the adapter alone: peft.AutoPeftModelForFeatureExtraction.from_pretrained(...)",
        ]
    else:
        model_class = method.model_class.__name__
        lines += [
            f"from flexretrofit import {model_class}, load_tokenizer",
            "",
            f'model = {model_class}.from_pretrained("<this folder>")',
            'tokenizer = load_tokenizer("<this folder>")',
        ]
    lines += ["```", ""]
    if adapter:
        lines += [
            "Files: `adapter_config.json` + `adapter_model.safetensors` (a PEFT LoRA adapter over the base model)"
            + (
                ", `flexmdm_modules.safetensors` (time embedding, AdaLN, insertion head) and `flexmdm_config.json`"
                if method.new_modules
                else ""
            )
            + ", the tokenizer. The base weights are not included.",
            "",
        ]
    plain = json.loads(json.dumps(config.to_dict()))  # tuples -> lists
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(plain, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)
