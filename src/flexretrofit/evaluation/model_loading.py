"""The model and tokenizer an evaluation runs: checked from config.json first, loaded last.

:func:`check_model` reads only the checkpoint's ``config.json`` (is it a FlexMDM or a LLaDA, can the
chosen sampler run it, does the tokenizer's mask id match), so a wrong ``--model`` fails before any
weights are read; :func:`load_model` then loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.settings import EvalConfigError

MODEL_TYPES = ("flexmdm", "llada")


def read_model_config(path: str) -> dict[str, Any]:
    """A checkpoint's ``config.json`` (local folder, or fetched from the hub) as a dict."""
    local = Path(path)
    if local.exists():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise EvalConfigError(
                f"{path} has no config.json; pass the checkpoint folder that holds config.json"
            )
    else:
        try:
            from huggingface_hub import hf_hub_download

            config_path = Path(hf_hub_download(str(path), "config.json"))
        except Exception as error:  # offline, unknown repo: both mean "pass a local folder"
            raise EvalConfigError(
                f"{path} is not a local folder and its config.json could not be fetched from the hub "
                f"({type(error).__name__}); pass a local checkpoint folder"
            ) from error
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvalConfigError(
            f"{config_path} is not valid JSON ({error}); pass a checkpoint folder"
        ) from None
    if not isinstance(config, dict):
        raise EvalConfigError(f"{config_path} does not hold a JSON object; pass a checkpoint folder")
    return config


def read_model_type(path: str) -> str:
    """``model_type`` from a checkpoint's config.json (local folder, or fetched from the hub)."""
    return str(read_model_config(path).get("model_type"))


def check_model(path: str, *, sampler: str, fresh_retrofit: bool = False) -> str:
    """The checkpoint's ``model_type``, after checking that ``sampler`` can run it (config.json only).

    Raises:
        EvalConfigError: not a FlexMDM or LLaDA checkpoint, or a LLaDA with the flexible-length sampler
            and no ``fresh_retrofit``.
    """
    model_type = read_model_type(path)
    if model_type not in MODEL_TYPES:
        raise EvalConfigError(
            f"{path}: config.json model_type is {model_type!r}; this evaluation runs 'flexmdm' and 'llada' checkpoints"
        )
    if model_type == "llada" and sampler == "flex" and not fresh_retrofit:
        raise EvalConfigError(
            f"{path} is a LLaDA checkpoint; the flexible-length sampler needs a FlexMDM. Evaluate a "
            "retrofit (recipes/retrofit_llada.py), use --sampler mdm, or pass --fresh-retrofit to run "
            "an untrained retrofit of it (a smoke test, not a result)"
        )
    return model_type


def load_eval_tokenizer(path: str, model_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer at ``path``, checked against the mask id in ``model_path``'s config.json."""
    from flexretrofit.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(path)
    except (OSError, ValueError) as error:  # no tokenizer files there, or no mask token
        raise EvalConfigError(
            f"could not load a tokenizer from {path} ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}); pass --tokenizer with the model's tokenizer folder or hub id"
        ) from error
    mask_id = _config_mask_id(model_path)
    if tokenizer.mask_token_id != mask_id:
        raise EvalConfigError(
            f"the tokenizer's mask id {tokenizer.mask_token_id} is not the model's {mask_id}; "
            "pass the model's own tokenizer (--tokenizer)"
        )
    return tokenizer


def _config_mask_id(path: str) -> int | None:
    from transformers import AutoConfig

    import flexretrofit  # noqa: F401  (registers the LLaDA and FlexMDM configs with AutoConfig)

    try:
        return AutoConfig.from_pretrained(path).mask_token_id
    except (OSError, ValueError, TypeError) as error:
        raise EvalConfigError(
            f"{path}: config.json cannot be read as a model config ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}); pass a FlexMDM or LLaDA checkpoint folder"
        ) from error


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a GPU that has it, else float32; otherwise the named dtype."""
    if name == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, name)


def load_model(
    path: str,
    *,
    sampler: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    fresh_retrofit: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate and what the summary says about it.

    A ``flexmdm`` checkpoint runs with either sampler. A ``llada`` checkpoint runs with the MDM sampler;
    with ``sampler="flex"`` only when ``fresh_retrofit`` asks for an untrained retrofit of it (new
    modules from ``seed``): useful for smoke tests and demos, not for results.
    """
    from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM

    model_type = check_model(path, sampler=sampler, fresh_retrofit=fresh_retrofit)
    retrofitted = False
    if model_type == "flexmdm":
        model = FlexMDMForMaskedDiffusion.from_pretrained(path, dtype=dtype)
    else:
        model = LLaDAModelLM.from_pretrained(path, dtype=dtype)
        if sampler == "flex":
            torch.manual_seed(seed)
            model = FlexMDMForMaskedDiffusion.from_llada(model)
            retrofitted = True
    model = model.to(device).eval()
    info = {
        "path": str(path),
        "resolved_path": str(Path(path).resolve()) if Path(path).exists() else None,
        "model_type": model_type,
        "evaluated_as": type(model).__name__,
        "fresh_retrofit": retrofitted,
        "dtype": str(dtype).removeprefix("torch."),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, info
