"""The final model folder: a merged model, or a PEFT adapter plus the FlexMDM's new modules; written atomically.

``merge`` (LoRA folded into the weights, or no LoRA at all) writes a plain ``from_pretrained`` folder:
``config.json``, ``model.safetensors``, ``generation_config.json`` (the trained model's sampler settings,
``model.generation_config``), the tokenizer and a model card (``README.md``).

``adapter`` writes only what training changed, next to a base model named in ``adapter_config.json``:

- ``adapter_config.json`` + ``adapter_model.safetensors``: the LoRA adapter, a standard PEFT adapter over the
  checkpoint in ``model.init_from`` (``base_model_name_or_path``; ``task_type: FEATURE_EXTRACTION``, so
  ``peft.AutoPeftModelForFeatureExtraction`` loads it onto that checkpoint through ``AutoModel``, which
  ``import flexretrofit`` registers for LLaDA and FlexMDM). For a fresh retrofit the base is the LLaDA
  checkpoint, so the adapter's keys are those of the LLaDA backbone.
- ``flexmdm_modules.safetensors`` + ``flexmdm_config.json`` (FlexMDM only): the trained time embedding, AdaLN and
  insertion head, and the FlexMDM config (schedules, sizes) they belong to.
- ``generation_config.json`` (the trained model's sampler settings), the tokenizer and ``README.md``.

:func:`load_adapter_export` puts them together again. Every export is written to ``<dir>.tmp`` beside the
target and renamed into place once complete, so an interrupted export never leaves a folder that looks done.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import AutoPeftModelForFeatureExtraction, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights
from transformers.utils import GENERATION_CONFIG_NAME

from flexretrofit.models.auto import needs_retrofit
from flexretrofit.models.checkpoint import read_model_type
from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion
from flexretrofit.models.lora import NEW_MODULES
from flexretrofit.sampling.config import load_generation_config
from flexretrofit.training.builders import base_model
from flexretrofit.training.checkpointing import CheckpointWriteError
from flexretrofit.training.config import RecipeConfig
from flexretrofit.training.methods import training_method
from flexretrofit.training.model_card import model_card as build_model_card

NEW_MODULES_FILE = "flexmdm_modules.safetensors"
FLEXMDM_CONFIG_FILE = "flexmdm_config.json"
ADAPTER_TASK_TYPE = "FEATURE_EXTRACTION"
_BACKBONE_PREFIX = "base_model.model.backbone."


def _rebuild_on_meta(model: nn.Module, full_state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model``'s architecture (PEFT wrapping included) holding ``full_state``.

    Built on the meta device and filled by assignment, so no memory is spent on a random init; this is
    how the gathered weights of a ZeRO-3 model (whose own parameters are empty shards) get a home. The
    copy carries ``model``'s sampler ``generation_config`` (a fresh one would hold the library defaults).
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    with torch.device("meta"):
        skeleton = type(base)(base.config)
        skeleton.generation_config = copy.deepcopy(base.generation_config)
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
    base_model_name_or_path: str | None = None,
    model_card: str | None = None,
) -> Path:
    """Write the trained model folder (collective; the main process writes), atomically.

    Args:
        model: the prepared model (FlexMDM or LLaDA, possibly inside PEFT; see ``builders.base_model``).
        lora_mode: ``merge`` (adapters folded into the weights) or ``adapter`` (the adapter and the new
            modules only, over ``base_model_name_or_path``; see the module docstring).
        dtype: cast the weights before saving (default: as trained).
        base_model_name_or_path: the checkpoint training started from (``model.init_from``); needed for
            ``adapter``.
        model_card: the ``README.md`` text (see :mod:`flexretrofit.training.model_card`).
    """
    export_dir = Path(export_dir)
    full_state = gather_full_state(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        rebuilt = _rebuild_on_meta(unwrapped, full_state)
        if dtype is not None:
            rebuilt = rebuilt.to(dtype)
        tmp = export_dir.with_name(export_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if lora_mode == "adapter":
            if not isinstance(rebuilt, PeftModel):
                raise ValueError(
                    "export.lora=adapter needs a LoRA model; set lora.enabled=true or export.lora=merge."
                )
            if not base_model_name_or_path:
                raise ValueError(
                    "an adapter export needs base_model_name_or_path (the model.init_from checkpoint)."
                )
            save_adapter_export(rebuilt, tmp, base_model_name_or_path)
        else:
            plain = rebuilt.merge_and_unload() if isinstance(rebuilt, PeftModel) else rebuilt
            base_model(plain).save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if model_card is not None:
            (tmp / "README.md").write_text(model_card)
        _replace_folder(tmp, export_dir)
    accelerator.wait_for_everyone()
    return export_dir


def export_run(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    config: RecipeConfig,
    step: int,
    export_dir: Path,
) -> Path:
    """The final folder of a run after ``step`` optimizer steps (collective): :func:`export_model` as the
    ``export`` section says, over ``model.init_from``, with the model card.

    Raises:
        CheckpointWriteError: the folder could not be written (a full disk); the partial folder is removed.
    """
    export = config.export
    dtype = getattr(torch, export.dtype) if export.dtype else None
    model_config = base_model(accelerator.unwrap_model(model)).config.to_dict()
    card = build_model_card(config, step, export.lora, model_config)
    try:
        return export_model(
            accelerator,
            model,
            tokenizer,
            export_dir,
            export.lora,
            dtype,
            base_model_name_or_path=config.model.init_from,
            model_card=card,
        )
    except (OSError, SafetensorError) as error:
        # The export is written to <export_dir>.tmp and renamed: the partial folder is only in the way.
        shutil.rmtree(export_dir.with_name(export_dir.name + ".tmp"), ignore_errors=True)
        raise CheckpointWriteError.from_error(
            export_dir, error, config.train.output_dir, "the export"
        ) from error


def _replace_folder(source: Path, target: Path) -> None:
    """Move the finished folder ``source`` to ``target``; an older ``target`` is moved aside, then removed.

    At every instant ``target`` is either the old complete folder, absent, or the new complete folder.
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    if old.exists():
        shutil.rmtree(old)


def save_adapter_export(peft_model: PeftModel, folder: Path, base_model_name_or_path: str) -> None:
    """LoRA adapter (over the base checkpoint) + the FlexMDM's trained new modules, in ``folder``."""
    adapter_state = {
        k: v.contiguous() for k, v in get_peft_model_state_dict(peft_model).items() if "lora_" in k
    }
    inner = peft_model.get_base_model()
    method = training_method(inner.config)
    if needs_retrofit(read_model_type(base_model_name_or_path), method.name):
        # A fresh retrofit: the base checkpoint is the LLaDA backbone, so the adapter addresses its modules.
        adapter_state = {
            k.replace(_BACKBONE_PREFIX, "base_model.model.", 1): v for k, v in adapter_state.items()
        }
    local = Path(base_model_name_or_path)
    config = copy.deepcopy(peft_model.peft_config["default"])
    config.modules_to_save = None
    config.inference_mode = True
    config.task_type = ADAPTER_TASK_TYPE
    config.base_model_name_or_path = str(local.resolve()) if local.is_dir() else base_model_name_or_path
    config.save_pretrained(str(folder))
    save_file(adapter_state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    if method.new_modules:
        flex = peft_model.unload()  # the adapters removed, the new modules' trained copies put in place
        modules = {k: v.contiguous() for k, v in flex.state_dict().items() if k.split(".")[0] in NEW_MODULES}
        save_file(modules, str(folder / NEW_MODULES_FILE), metadata={"format": "pt"})
        flex.config.to_json_file(str(folder / FLEXMDM_CONFIG_FILE), use_diff=False)
    inner.generation_config.save_pretrained(str(folder))  # the trained model's sampler settings


def load_adapter_export(
    folder: str | os.PathLike, base_model: str | None = None, merge: bool = False
) -> nn.Module:
    """The trained model from an ``export.lora: adapter`` folder, in eval mode.

    Loads the base checkpoint with the adapter through ``peft.AutoPeftModelForFeatureExtraction`` (or onto
    ``base_model`` when given, e.g. after moving the base), then, for a FlexMDM, wraps the backbone with the
    saved config and loads the trained new modules.

    Args:
        folder: the export folder.
        base_model: overrides ``base_model_name_or_path`` in ``adapter_config.json``.
        merge: fold the adapter into the base weights (a plain model, no LoRA layers).

    Returns:
        a :class:`~flexretrofit.models.FlexMDMForMaskedDiffusion` or :class:`~flexretrofit.models.LLaDAModelLM`.
    """
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no adapter_config.json; pass a folder exported with export.lora=adapter."
        )
    if base_model is None:
        peft_model = AutoPeftModelForFeatureExtraction.from_pretrained(str(folder))
    else:
        peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), str(folder))
    inner = peft_model.merge_and_unload() if merge else peft_model.get_base_model()
    if not (folder / NEW_MODULES_FILE).is_file():
        return _with_saved_generation_config(inner, folder).eval()
    model = inner  # the base was a FlexMDM already: its new modules get the trained values
    if needs_retrofit(inner.config.model_type, "flexmdm"):  # the base is a fresh retrofit's LLaDA backbone
        config = FlexMDMConfig.from_json_file(str(folder / FLEXMDM_CONFIG_FILE))
        with no_init_weights():  # the backbone (and its adapter) are loaded; the new modules come next
            model = FlexMDMForMaskedDiffusion(config, backbone=inner)
    modules = load_file(str(folder / NEW_MODULES_FILE))
    expected = {k for k in model.state_dict() if k.split(".")[0] in NEW_MODULES}
    if set(modules) != expected:
        raise ValueError(
            f"{folder / NEW_MODULES_FILE} does not match the model's new modules: missing "
            f"{sorted(expected - set(modules))[:5]}, unexpected {sorted(set(modules) - expected)[:5]}"
        )
    model.load_state_dict(modules, strict=False)
    return _with_saved_generation_config(model.to(inner.dtype), folder).eval()


def _with_saved_generation_config(model: nn.Module, folder: Path) -> nn.Module:
    """``model`` with the export's ``generation_config.json`` (the trained model's sampler settings), if any."""
    if (folder / GENERATION_CONFIG_NAME).is_file():
        model.generation_config = load_generation_config(folder, type(model).generation_config_class)
    return model
