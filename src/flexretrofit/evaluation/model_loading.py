"""The model and tokenizer an evaluation runs: checked from config.json first, loaded last.

:func:`check_model` reads only the checkpoint's ``config.json`` (its model_type, whether the chosen
method runs it: :data:`flexretrofit.models.auto.MODEL_TYPE_METHODS` / :func:`~flexretrofit.models.auto.needs_retrofit`), so a wrong ``--model`` fails before any
weights are read; :func:`load_model` then loads the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.tasks.base import EvalConfigError
from flexretrofit.models import (
    CheckpointError,
    FlexMDMForMaskedDiffusion,
    TokenizerLoadError,
    load_pretrained,
    load_tokenizer,
    read_model_type,
)
from flexretrofit.models.auto import MODEL_TYPE_METHODS, load_config, needs_retrofit

MODEL_TYPES = tuple(sorted(MODEL_TYPE_METHODS))


def check_model(path: str, *, method: str, fresh_retrofit: bool = False) -> str:
    """The checkpoint's ``model_type``, after checking that ``method`` can run it (config.json only).

    Raises:
        FileNotFoundError: a local path that is not a folder with config.json.
        EvalConfigError: config.json unreadable or not reachable on the hub, not a FlexMDM or LLaDA
            checkpoint, or one that runs ``method`` only once retrofitted and no ``fresh_retrofit``.
    """
    try:
        model_type = read_model_type(path)
    except CheckpointError as error:  # unreadable config.json, no model_type, hub not reachable
        raise EvalConfigError(str(error)) from None
    if model_type not in MODEL_TYPES:
        raise EvalConfigError(
            f"{path}: config.json model_type is {model_type!r}; this evaluation runs "
            f"{' and '.join(map(repr, MODEL_TYPES))} checkpoints"
        )
    if needs_retrofit(model_type, method) and not fresh_retrofit:
        raise EvalConfigError(
            f"{path} is a {model_type} checkpoint; the {method} sampler needs a FlexMDM. Evaluate a "
            f"retrofit (recipes/retrofit_llada.py), use --method {MODEL_TYPE_METHODS[model_type]}, or pass "
            "--fresh-retrofit to run an untrained retrofit of it (a smoke test, not a result)"
        )
    return model_type


def load_eval_tokenizer(path: str, model_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer at ``path``, checked against the mask id in ``model_path``'s config.json."""
    try:
        tokenizer = load_tokenizer(path)
    except TokenizerLoadError as error:
        raise EvalConfigError(
            f"{error}; pass --tokenizer with the model's tokenizer folder or hub id"
        ) from error
    mask_id = _config_mask_id(model_path)
    if tokenizer.mask_token_id != mask_id:
        raise EvalConfigError(
            f"the tokenizer's mask id {tokenizer.mask_token_id} is not the model's {mask_id}; "
            "pass the model's own tokenizer (--tokenizer)"
        )
    return tokenizer


def _config_mask_id(path: str) -> int | None:
    try:
        return load_config(path).mask_token_id
    except (OSError, ValueError, TypeError) as error:
        raise EvalConfigError(
            f"{path}: config.json cannot be read as a model config ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}); pass a FlexMDM or LLaDA checkpoint folder"
        ) from error


def load_model(
    path: str,
    *,
    method: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    fresh_retrofit: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate and what the summary says about it.

    A ``flexmdm`` checkpoint runs with either method. A ``llada`` checkpoint runs with the MDM sampler;
    with ``method="flexmdm"`` only when ``fresh_retrofit`` asks for an untrained retrofit of it (new
    modules from ``seed``): useful for smoke tests and demos, not for results.

    Raises:
        FileNotFoundError / EvalConfigError: as :func:`check_model`, or a checkpoint whose weights cannot
            be loaded (:class:`~flexretrofit.models.CheckpointError`, one line naming the file).
    """
    model_type = check_model(path, method=method, fresh_retrofit=fresh_retrofit)
    try:
        model = load_pretrained(path, dtype=dtype)
    except CheckpointError as error:  # a missing config field, a truncated shard, keys that do not match
        raise EvalConfigError(str(error)) from None
    retrofitted = needs_retrofit(model_type, method)
    if retrofitted:
        torch.manual_seed(seed)
        model = FlexMDMForMaskedDiffusion.from_llada(model)
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
