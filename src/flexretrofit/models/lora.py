"""LoRA presets with LLaDA's module names.

LLaDA names its projections differently from Llama (``attn_out`` = o_proj, ``ff_proj`` = gate_proj,
block ``ff_out`` = down_proj, ``transformer.ff_out`` = lm_head), so Llama target lists silently skip
most of the model. ``ff_out`` names both the per-block down projection and the LM head; the regexes
below address each one alone.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

ATTENTION = ("q_proj", "k_proj", "v_proj")
ATTENTION_OUT = ("attn_out",)
MLP = ("ff_proj", "up_proj", "block_ff_out")
LM_HEAD = ("lm_head",)

# Module groups -> regex over full module names (PEFT matches the whole name with re.fullmatch).
_PATTERNS = {
    "q_proj": r".*blocks\.\d+\.q_proj",
    "k_proj": r".*blocks\.\d+\.k_proj",
    "v_proj": r".*blocks\.\d+\.v_proj",
    "attn_out": r".*blocks\.\d+\.attn_out",
    "ff_proj": r".*blocks\.\d+\.ff_proj",
    "up_proj": r".*blocks\.\d+\.up_proj",
    "block_ff_out": r".*blocks\.\d+\.ff_out",
    "lm_head": r".*transformer\.ff_out",
}

LORA_PRESETS: dict[str, tuple[str, ...]] = {
    # The published retrofit: q/k/v and the LM head.
    "published": ATTENTION + LM_HEAD,
    "attention": ATTENTION + ATTENTION_OUT,
    "all_linear": ATTENTION + ATTENTION_OUT + MLP + LM_HEAD,
}

# Modules a FlexMDM adds; they train from scratch, fully (not through LoRA).
NEW_MODULES = ("time_embedding", "adaln", "insertion_head")


def lora_target_regex(targets: str | tuple[str, ...] | list[str]) -> str:
    """A PEFT ``target_modules`` regex for a preset name or a list of module groups (see ``_PATTERNS``)."""
    names = LORA_PRESETS[targets] if isinstance(targets, str) and targets in LORA_PRESETS else targets
    if isinstance(names, str):
        raise ValueError(
            f"unknown LoRA preset {names!r}; choose one of {sorted(LORA_PRESETS)} or a list of {sorted(_PATTERNS)}"
        )
    unknown = [n for n in names if n not in _PATTERNS]
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {unknown}; choose from {sorted(_PATTERNS)}")
    return "|".join(f"(?:{_PATTERNS[n]})" for n in names)


def apply_lora(
    model: torch.nn.Module,
    targets: str | list[str] = "published",
    r: int = 128,
    alpha: int = 128,
    dropout: float = 0.1,
    train_new_modules: bool = True,
) -> PeftModel:
    """Wrap ``model`` (a FlexMDM or a LLaDA) with LoRA adapters on the chosen LLaDA modules.

    Defaults are the published retrofit: r = alpha = 128, dropout 0.1 on q/k/v and the LM head. With
    ``train_new_modules`` the FlexMDM's new modules (time embedding, AdaLN, insertion head) stay fully trainable.
    """
    present = [m for m in NEW_MODULES if hasattr(model, m)] if train_new_modules else []
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(targets),
        modules_to_save=present or None,
        bias="none",
    )
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> torch.nn.Module:
    """Fold the adapters into the base weights and return the plain model (saveable as a normal folder)."""
    return model.merge_and_unload()
