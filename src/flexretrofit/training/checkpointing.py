"""Checkpoints that resume exactly, and the final model export.

A checkpoint folder ``<output_dir>/checkpoints/step_0000042/`` holds:

- what :meth:`accelerate.Accelerator.save_state` writes: model weights (``model.safetensors``), optimizer
  state and every process's RNG states (torch, numpy, python), read back with ``weights_only=True``. Under
  DeepSpeed the weights and optimizer are instead DeepSpeed's own ZeRO shards (``pytorch_model/*.pt``,
  written and read by DeepSpeed, which needs them to resume a sharded optimizer); the export is safetensors;
- ``trainer_state.json``: the step, the learning-rate scheduler state, the batch sampler's
  ``(epoch, position)``, the batch layout and the config, as plain JSON.

Each checkpoint is written to ``step_N.tmp`` and renamed once complete, so a crash mid-save never leaves
a folder that looks resumable. Loading restores all of it; the data then continues with the next unseen
global batch and the noise of every later step is identical (the collators seed it from the step).

The export is a folder :meth:`FlexMDMForMaskedDiffusion.from_pretrained` (or ``LLaDAModelLM``) loads:
safetensors weights, config and tokenizer; LoRA merged into the weights, or kept as an adapter beside the
base weights (``adapter_config.json`` + ``adapter_model.safetensors``), which ``from_pretrained`` applies.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first (unfinished ``.tmp`` folders are ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def resolve_resume(resume_from: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None if there is none yet), a folder, or None."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"train.resume_from={resume_from} is not a complete checkpoint (no {TRAINER_STATE}); pass a "
            f"folder like {checkpoint_dir(output_dir, 100)} or 'latest'."
        )
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Save the accelerator state plus ``state`` (JSON) for ``step``; keep the newest ``keep`` checkpoints.

    Collective: every process must call it.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep is not None and keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> dict[str, Any]:
    """Restore the accelerator state (model, optimizer, RNG) from ``path`` and return its trainer state."""
    path = Path(path)
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text())


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _rebuild_on_meta(model: nn.Module, full_state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model``'s architecture (PEFT wrapping included) holding ``full_state``.

    Built on the meta device and filled by assignment, so no memory is spent on a random init; this is
    how the gathered weights of a ZeRO-3 model (whose own parameters are empty shards) get a home.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    with torch.device("meta"):
        skeleton = type(base)(base.config)
        if isinstance(model, PeftModel):
            skeleton = get_peft_model(skeleton, copy.deepcopy(model.peft_config["default"]))
    missing, unexpected = skeleton.load_state_dict(full_state, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(
            f"gathered weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return skeleton


def gather_full_state(accelerator: Accelerator, model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the prepared (possibly ZeRO-3 sharded) model, on CPU, on the main process ({} elsewhere).

    Collective under DeepSpeed (ZeRO-3 gathers the 16-bit weights: set
    ``zero3_save_16bit_model: true`` in the accelerate config).
    """
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return {}
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def export_model(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    export_dir: str | os.PathLike,
    lora_mode: str = "merge",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the trained model as a ``from_pretrained`` folder (collective; the main process writes).

    Args:
        model: the prepared model (FlexMDM or LLaDA, possibly inside PEFT; see ``builders.base_model``).
        lora_mode: ``merge`` (adapters folded into the weights) or ``adapter`` (base weights with the trained
            new modules, plus the LoRA adapter files beside them).
        dtype: cast the weights before saving (default: as trained).
    """
    from flexretrofit.training.builders import base_model  # local: builders imports the data stack

    export_dir = Path(export_dir)
    full_state = gather_full_state(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        rebuilt = _rebuild_on_meta(unwrapped, full_state)
        if dtype is not None:
            rebuilt = rebuilt.to(dtype)
        export_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(rebuilt, PeftModel) and lora_mode == "adapter":
            _save_with_adapter(rebuilt, export_dir)
        else:
            plain = rebuilt.merge_and_unload() if isinstance(rebuilt, PeftModel) else rebuilt
            base_model(plain).save_pretrained(export_dir, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(export_dir)
    accelerator.wait_for_everyone()
    return export_dir


def _save_with_adapter(peft_model: PeftModel, export_dir: Path) -> None:
    """Base weights (with the trained new modules) + a LoRA-only adapter in the same folder."""
    adapter_state = {
        k: v.contiguous()
        for k, v in get_peft_model_state_dict(peft_model).items()
        if ".modules_to_save." not in k and "lora_" in k
    }
    config = peft_model.peft_config["default"]
    config.modules_to_save = None
    config.base_model_name_or_path = None
    base = peft_model.unload()  # adapters removed, new modules' trained copies put in place
    base.save_pretrained(export_dir, safe_serialization=True)
    config.save_pretrained(str(export_dir))
    save_file(adapter_state, str(export_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
