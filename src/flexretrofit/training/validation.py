"""Checks of a recipe config that need the world: data files, the model's length limit, the batch layout
over the processes, the output folder and the trackers. :func:`validate_config` runs them all before any
weight is loaded; each failure is a :class:`~flexretrofit.training.config.ConfigError` naming the key.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedConfig

from flexretrofit.models.auto import MODEL_CLASSES
from flexretrofit.models.checkpoint import CheckpointError, read_model_type
from flexretrofit.run_lock import is_lock_file
from flexretrofit.training.config import (
    ConfigError,
    DataSourceConfig,
    ModelConfig,
    OptimConfig,
    RecipeConfig,
    TrainConfig,
)
from flexretrofit.training.lora_check import check_lora_targets
from flexretrofit.training.methods import training_method


def batch_layout(train: TrainConfig, world_size: int) -> tuple[int, int]:
    """``(micro_batch_size, gradient_accumulation_steps)`` for ``world_size`` processes.

    Raises:
        ConfigError: the global batch does not split into micro batches x processes x accumulation steps.
    """
    micro, total = train.micro_batch_size, train.global_batch_size
    if micro < 1 or total < 1:
        raise ConfigError(
            f"train.micro_batch_size ({micro}) and train.global_batch_size ({total}) must be >= 1."
        )
    per_step = micro * world_size
    accumulation = train.gradient_accumulation_steps
    if accumulation is None:
        if total % per_step:
            raise ConfigError(
                f"train.global_batch_size={total} is not divisible by train.micro_batch_size x processes = "
                f"{micro} x {world_size} = {per_step}; use a global batch that is a multiple of {per_step} "
                f"(e.g. {per_step * max(1, total // per_step)}) or change the micro batch size."
            )
        return micro, total // per_step
    if accumulation < 1 or per_step * accumulation != total:
        raise ConfigError(
            f"train.global_batch_size={total} is not micro_batch_size x processes x gradient_accumulation_steps "
            f"= {micro} x {world_size} x {accumulation} = {per_step * accumulation}; set "
            "train.gradient_accumulation_steps=null to derive it, or make the product match."
        )
    return micro, accumulation


def init_from_model_type(model: ModelConfig) -> str:
    """``model_type`` of the ``model.init_from`` checkpoint, from its config.json only (no weights).

    Raises:
        FileNotFoundError: a local path that is not a folder with config.json.
        ConfigError: config.json unreadable or without ``model_type``, or a hub id whose config cannot be read.
    """
    try:
        return read_model_type(model.init_from)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"model.init_from: {error}") from None
    except CheckpointError as error:
        raise ConfigError(f"model.init_from: {error}") from None


def model_length_limit(model: ModelConfig) -> int:
    """The longest sequence the model can train on, read from ``init_from``'s config only (no weights).

    A LLaDA backbone retrofitted as a FlexMDM gives up one position to the appended slot; an MDM uses all
    ``max_sequence_length``; a saved FlexMDM states its ``max_length``.
    """
    model_type = init_from_model_type(model)
    if model_type not in MODEL_CLASSES:
        raise ConfigError(
            f"model.init_from={model.init_from} has model_type={model_type!r}; expected a LLaDA ('llada') or "
            "FlexMDM ('flexmdm') checkpoint."
        )
    config, _ = PreTrainedConfig.get_config_dict(model.init_from)  # its config.json, checked just above
    return training_method(model.kind).length_limit(model, model_type, config)


def _check_source(source: DataSourceConfig, key: str) -> None:
    if (source.path is None) == (source.hub is None):
        raise ConfigError(f"{key} needs exactly one of path (local files) or hub (a hub dataset id).")
    if source.path is None:
        return
    entries = [source.path] if isinstance(source.path, str) else list(source.path)
    if not entries:
        raise ConfigError(f"{key}.path is empty; give a file, a folder or a glob.")
    missing = []
    for entry in entries:
        expanded = os.path.expanduser(entry)
        if any(c in expanded for c in "*?["):
            if not glob.glob(expanded, recursive=True):
                missing.append(f"{entry} (glob matches nothing)")
        elif not os.path.exists(expanded):
            missing.append(entry)
    if missing:
        raise FileNotFoundError(
            f"{key}.path: dataset file(s) not found: {', '.join(missing)} (relative paths resolve from "
            f"{os.getcwd()}). Fix the path, or write the data there first."
        )


def _check_streaming(config: RecipeConfig, world_size: int) -> None:
    """Options that need the whole dataset (a length, a held-out split) cannot stream."""
    data = config.data
    per_process = config.train.global_batch_size // world_size
    if data.shuffle_buffer < per_process or data.shuffle_buffer % per_process:
        raise ConfigError(
            f"data.shuffle_buffer={data.shuffle_buffer} must be a positive multiple of the per-process batch "
            f"{per_process} (train.global_batch_size / {world_size} processes), e.g. "
            f"{per_process * max(1, data.shuffle_buffer // per_process)}."
        )
    if config.eval.num_samples > 0 and not data.eval_sources:
        raise ConfigError(
            "data.streaming cannot hold evaluation samples out of a stream of unknown length; give "
            "data.eval_sources (the first eval.num_samples samples are used) or set eval.num_samples=0."
        )
    if data.num_proc is not None:
        raise ConfigError(
            "data.num_proc tokenises a whole dataset up front; with data.streaming samples are tokenised as "
            "they are read: set data.num_proc=null."
        )


def _widest_fixed_micro_batch(config: RecipeConfig) -> tuple[int, int]:
    """``(longest row + 1, micro_batch_size x that)``: the positions of the fixed layout's widest micro-batch
    (a FlexMDM runs one slot past ``x_t``)."""
    widest = (config.data.canvas_length or config.data.max_length) + 1
    return widest, config.train.micro_batch_size * widest


def micro_batch_token_cap(config: RecipeConfig) -> int:
    """``data.max_tokens_per_micro_batch``, or by default the fixed layout's widest micro-batch."""
    cap = config.data.max_tokens_per_micro_batch
    return _widest_fixed_micro_batch(config)[1] if cap is None else cap


def _check_balance(config: RecipeConfig) -> None:
    """A token cap below the fixed layout's widest micro-batch could leave a global batch with no fit."""
    if config.data.max_tokens_per_micro_batch is None:
        return
    if config.data.balance != "tokens":
        raise ConfigError(
            "data.max_tokens_per_micro_batch caps balanced micro-batches; set data.balance=tokens or remove it."
        )
    widest, least = _widest_fixed_micro_batch(config)
    if config.data.max_tokens_per_micro_batch < least:
        raise ConfigError(
            f"data.max_tokens_per_micro_batch={config.data.max_tokens_per_micro_batch} is below "
            f"train.micro_batch_size x (longest sample + 1) = {config.train.micro_batch_size} x {widest} = "
            f"{least}, so a global batch of long samples would not fit; use >= {least} or null (= {least})."
        )


def validate_config(config: RecipeConfig, world_size: int = 1) -> tuple[int, int]:
    """Check a config against the data on disk, the model's length limit and ``world_size``.

    Returns:
        ``(micro_batch_size, gradient_accumulation_steps)`` (see :func:`batch_layout`).

    Raises:
        FileNotFoundError: a dataset file or the model folder is missing.
        ConfigError: any other setting that cannot run, naming the key and the fix.
    """
    if not config.model.init_from:
        raise ConfigError(
            "model.init_from is empty; set it to a LLaDA checkpoint (hub id or folder) or a FlexMDM folder."
        )
    if not config.data.sources:
        raise ConfigError(
            "data.sources is empty; give at least one dataset (path: <file|folder|glob> or hub: <id>)."
        )
    for name in ("sources", "eval_sources"):
        for i, source in enumerate(getattr(config.data, name)):
            _check_source(source, f"data.{name}[{i}]")
    if config.data.format != "corpus" and len(config.data.sources) > 1:
        raise ConfigError(
            f"data.format={config.data.format!r} takes one source; merge the files into one list."
        )
    limit = model_length_limit(config.model)
    length = config.data.canvas_length or config.data.max_length
    if config.data.max_length < 1 or length > limit:
        raise ConfigError(
            f"data.max_length={config.data.max_length}"
            + (f" (canvas_length={config.data.canvas_length})" if config.data.canvas_length else "")
            + f" is above the model's limit of {limit} tokens for model.kind={config.model.kind!r} "
            f"(from {config.model.init_from}); use data.max_length <= {limit}."
        )
    if config.data.canvas_length is not None and not training_method(config.model.kind).fixed_length:
        raise ConfigError(
            "data.canvas_length pads samples for the MDM baseline; set it only with model.kind=mdm."
        )
    train = config.train
    if train.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1, got {train.max_steps}.")
    if train.stop_at_step is not None and not 1 <= train.stop_at_step <= train.max_steps:
        raise ConfigError(
            f"train.stop_at_step={train.stop_at_step} must lie in [1, train.max_steps={train.max_steps}]."
        )
    resume = train.resume_from
    if resume not in (None, "latest") and not (Path(resume) / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"train.resume_from={resume} is not a checkpoint folder (no trainer_state.json); pass one of "
            f"{train.output_dir}/checkpoints/step_*, 'latest' (the newest, if any) or null."
        )
    check_output_dir(train)
    check_report_to(train)
    if config.export.lora == "adapter" and not config.lora.enabled:
        raise ConfigError(
            "export.lora=adapter exports a LoRA adapter; set lora.enabled=true or export.lora=merge."
        )
    check_optim(config.optim)
    layout = batch_layout(train, world_size)
    _check_balance(config)
    if config.data.streaming:
        _check_streaming(config, world_size)
    if config.lora.enabled:
        check_lora_targets(config.model, config.lora)
    return layout


def check_optim(optim: OptimConfig) -> None:
    """Every optimiser number finite and in its range: a NaN, infinite or negative learning rate trains
    silently into a NaN model (nan < 0 is False, so each range is written as what must hold)."""

    def number(key: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> None:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and value <= high
        )
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
            raise ConfigError(f"optim.{key}={value!r} must be a finite number in {interval}.")

    number("lr", optim.lr, 0.0, low_open=True)
    if optim.new_module_lr is not None:
        number("new_module_lr", optim.new_module_lr, 0.0, low_open=True)
    number("weight_decay", optim.weight_decay, 0.0)
    number("eps", optim.eps, 0.0, low_open=True)
    number("min_lr_ratio", optim.min_lr_ratio, 0.0, 1.0)
    number("max_grad_norm", optim.max_grad_norm, 0.0, low_open=True)
    if not 0.0 <= optim.warmup_ratio < 1.0 or not math.isfinite(optim.warmup_ratio):
        raise ConfigError(f"optim.warmup_ratio={optim.warmup_ratio} must lie in [0, 1).")
    betas = optim.betas
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigError(f"optim.betas={betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999].")
    for i, beta in enumerate(betas):
        number(f"betas[{i}]", beta, 0.0, 1.0)
        if beta == 1.0:
            raise ConfigError(f"optim.betas[{i}]=1 never forgets; use a number below 1, e.g. 0.999.")


def check_output_dir(train: TrainConfig) -> None:
    """Refuse to start a fresh run (``resume_from: null``) in an ``output_dir`` that already holds files.

    Raises:
        ConfigError: naming the files found, ``train.resume_from`` and ``train.output_dir``.
    """
    out = Path(train.output_dir)
    check_creatable_dir(out, "train.output_dir")
    if train.resume_from is not None or not out.is_dir():
        return
    # A past run's lock file is no output of it.
    entries = sorted(p.name for p in out.iterdir() if not is_lock_file(p.name))
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"train.output_dir={out} is not empty ({shown}); pass train.resume_from=latest to continue that run, "
            "or choose another train.output_dir (or delete the folder) to start afresh."
        )


def check_creatable_dir(path: str | os.PathLike, key: str) -> None:
    """``path`` is a folder, or one can be made there: its nearest existing ancestor is a writable folder
    (not a file), checked before anything is loaded rather than failing at the first write.

    Raises:
        ConfigError: naming ``key``, the path and the part in the way.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{key}={path} {where}, not a folder; choose another {key}.")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={path} cannot be written: {existing} is not writable; choose another {key}."
        )


def check_report_to(train: TrainConfig) -> None:
    """``train.report_to`` names a tracker whose package is installed (Accelerate would fail later)."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(train.report_to, ())
    if needs and not any(importlib.util.find_spec(name) for name in needs):
        raise ConfigError(
            f"train.report_to={train.report_to} needs the {needs[0]} package: pip install {needs[0]}, "
            "or set train.report_to=none."
        )
