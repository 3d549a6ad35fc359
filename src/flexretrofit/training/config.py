"""Training configuration: dataclasses loaded from YAML, checked before any training starts.

A recipe config has seven sections, each a dataclass below: ``model``, ``lora``, ``data``, ``optim``,
``train``, ``eval`` and ``export``. :func:`load_config` reads a YAML file, applies ``key=value``
overrides (``train.max_steps=10``, ``lora.enabled=false``) and fails on unknown keys, naming the key and
the keys allowed there. :func:`validate_config` then checks what needs the world: that the data files
exist, that ``data.max_length`` fits the model, and that the global batch splits evenly into micro
batches over the processes and accumulation steps. Both run before the model is built.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from flexretrofit.diffusion.loss import INSERTION_WEIGHTINGS

MODEL_KINDS = ("flexmdm", "mdm")
DATA_FORMATS = ("corpus", "gsm8k", "infill", "prompt_completion")
DTYPES = ("float32", "bfloat16", "float16")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class ModelConfig:
    """What to train.

    Attributes:
        init_from: a LLaDA checkpoint (hub id or folder) to retrofit, or a FlexMDM folder to keep training.
        kind: ``flexmdm`` (insert + unmask) or ``mdm`` (the LLaDA baseline: fixed length, unmask only).
        tokenizer: tokenizer path; default ``init_from``.
        dtype: dtype the weights are loaded in (``bfloat16`` on GPUs; ``float32`` for CPU tests).
        flex_config: :class:`~flexretrofit.models.FlexMDMConfig` overrides for a fresh retrofit
            (schedules, ``modulation_group_size``, ``insertion_head_scale`` ...).
        activation_checkpointing: recompute block activations in the backward pass (saves memory).
    """

    init_from: str = ""
    kind: Literal["flexmdm", "mdm"] = "flexmdm"
    tokenizer: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    flex_config: dict[str, Any] = field(default_factory=dict)
    activation_checkpointing: bool = False


@dataclass
class LoRAConfig:
    """LoRA adapters (see :mod:`flexretrofit.models.lora`); ``enabled: false`` trains every weight."""

    enabled: bool = True
    targets: str | list[str] = "published"
    r: int = 128
    alpha: int = 128
    dropout: float = 0.1


@dataclass
class DataSourceConfig:
    """One dataset. ``path``: local file, folder, glob or list of them; ``hub``: a hub dataset id instead.

    ``weight`` mixes corpus sources (relative, counted in chunks); ``name``/``split`` select a hub config.
    """

    path: str | list[str] | None = None
    hub: str | None = None
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    weight: float = 1.0


@dataclass
class DataConfig:
    """Where samples come from and how they are laid out.

    Attributes:
        format: ``corpus`` (documents cut into chunks), ``gsm8k``, ``infill`` (code infilling) or
            ``prompt_completion``.
        sources: training datasets; corpus sources are mixed by ``weight``.
        eval_sources: evaluation datasets; when empty, ``eval.num_samples`` samples are held out of training.
        max_length: the longest sample in tokens (chunks are cut to it; longer instruction samples dropped).
        min_length: corpus chunks shorter than this are dropped.
        add_bos: corpus chunks start with a protected BOS token.
        format_kwargs: extra arguments of the format class (e.g. ``question_field``, ``span_unit``).
        canvas_length: MDM baseline only: pad each instruction sample with EOS to this many tokens (LLaDA's SFT).
        length_grouping: batch samples of similar length together (the alternative pads each batch to
            ``max_length``, as the published code does).
        mega_batch_factor: how many global batches are length-sorted together (with ``streaming``: how
            many of a process's batches, inside one shuffle buffer).
        num_proc: processes for tokenisation (not with ``streaming``).
        streaming: read and tokenise the sources lazily while training (nothing is tokenised before step 1),
            each process its own share; batches are length-grouped one shuffle buffer at a time
            (:class:`~flexretrofit.data.streaming.LengthGroupedStream`). Evaluation samples then come from
            the first ``eval.num_samples`` of ``eval_sources`` (a stream has no held-out split).
        shuffle_buffer: with ``streaming``: samples each process reads, shuffles and length-groups at a
            time, a multiple of its batch (``train.global_batch_size / processes``).
    """

    format: Literal["corpus", "gsm8k", "infill", "prompt_completion"] = "corpus"
    sources: list[DataSourceConfig] = field(default_factory=list)
    eval_sources: list[DataSourceConfig] = field(default_factory=list)
    max_length: int = 1024
    min_length: int = 1
    add_bos: bool = False
    format_kwargs: dict[str, Any] = field(default_factory=dict)
    canvas_length: int | None = None
    length_grouping: bool = True
    mega_batch_factor: int = 50
    num_proc: int | None = None
    streaming: bool = False
    shuffle_buffer: int = 8192


@dataclass
class OptimConfig:
    """AdamW with two learning rates, cosine decay after linear warmup, global-norm clipping.

    ``lr`` applies to LoRA adapters (or all backbone weights when LoRA is off); ``new_module_lr`` to the
    modules a FlexMDM adds (time embedding, AdaLN, insertion head), default ``lr``.
    """

    lr: float = 1e-4
    new_module_lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    """The loop.

    Attributes:
        global_batch_size: samples per optimizer step over all processes and accumulation steps.
        micro_batch_size: samples per forward pass on one process.
        gradient_accumulation_steps: default ``global / (micro x processes)``; if given, the three must
            multiply to ``global_batch_size``.
        max_steps: optimizer steps; the learning-rate schedule spans them.
        stop_at_step: end early at this step (schedule unchanged), e.g. to split a run into jobs.
        mixed_precision: ``bf16`` (autocast, or DeepSpeed's bf16 mode) or ``no`` (fp32, CPU tests).
        resume_from: ``latest`` (newest checkpoint in ``output_dir``, if any), a checkpoint folder, or null.
        save_every / log_every / keep_checkpoints: checkpoint and log cadence; keep only the newest k.
        insertion_loss_weighting: FlexMDM only: ``elbo`` (each slot's gap loss weighted by ``kappa_alpha(t)``,
            published) or ``constant`` (weight 1); see :func:`flexretrofit.diffusion.flexmdm_loss`.
        report_to: ``tensorboard`` (``<output_dir>/tensorboard``), ``wandb`` (needs ``pip install wandb``) or
            ``none``: where Accelerate's trackers send the train and eval metrics (``log.jsonl`` is always written).

    A run refuses an ``output_dir`` that already holds files unless ``resume_from`` is set.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    global_batch_size: int = 8
    micro_batch_size: int = 8
    gradient_accumulation_steps: int | None = None
    max_steps: int = 100
    stop_at_step: int | None = None
    mixed_precision: Literal["no", "bf16"] = "no"
    log_every: int = 1
    save_every: int | None = None
    keep_checkpoints: int | None = 2
    resume_from: str | None = None
    insertion_loss_weighting: Literal["elbo", "constant"] = "elbo"
    report_to: Literal["none", "tensorboard", "wandb"] = "none"


@dataclass
class EvalConfig:
    """A fixed evaluation subset: the same samples, times and noise at every evaluation, so losses compare.

    ``every``: steps between evaluations (null: only at the end); ``seed`` fixes the times and noise.
    """

    every: int | None = None
    num_samples: int = 64
    batch_size: int = 8
    seed: int = 1234


@dataclass
class ExportConfig:
    """The final model folder (``output_dir/final`` by default), with a model card (``README.md``).

    ``lora``: ``merge`` folds adapters into the weights (a plain ``from_pretrained`` folder); ``adapter`` writes
    only the PEFT adapter over ``model.init_from`` (``adapter_config.json`` + ``adapter_model.safetensors``) and,
    for a FlexMDM, its new modules (``flexmdm_modules.safetensors`` + ``flexmdm_config.json``), no base weights;
    load it with :func:`flexretrofit.training.load_adapter_export`. ``dtype``: cast before saving.
    """

    dir: str | None = None
    lora: Literal["merge", "adapter"] = "merge"
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key and what to do."""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys raise."""
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}"
            + (f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; allowed keys in {where or 'the top level'}: {', '.join(fields)}."
        )
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        key = f"{where}.{name}" if where else name
        if nested is None:
            kwargs[name] = _check_choice(cls, name, value, key)
        elif isinstance(nested, list):
            if value is None:
                value = []
            if not isinstance(value, list):
                raise ConfigError(f"{key} must be a list of mappings, got {value!r}.")
            kwargs[name] = [_build(nested[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
        else:
            kwargs[name] = _build(nested, value, key)
    return cls(**kwargs)


_CHOICES = {
    (ModelConfig, "kind"): MODEL_KINDS,
    (ModelConfig, "dtype"): DTYPES,
    (DataConfig, "format"): DATA_FORMATS,
    (TrainConfig, "mixed_precision"): ("no", "bf16"),
    (TrainConfig, "insertion_loss_weighting"): INSERTION_WEIGHTINGS,
    (TrainConfig, "report_to"): REPORT_TO,
    (ExportConfig, "lora"): ("merge", "adapter"),
    (ExportConfig, "dtype"): (*DTYPES, None),
}
_NESTED: dict[tuple[type, str], Any] = {
    (RecipeConfig, "model"): ModelConfig,
    (RecipeConfig, "lora"): LoRAConfig,
    (RecipeConfig, "data"): DataConfig,
    (RecipeConfig, "optim"): OptimConfig,
    (RecipeConfig, "train"): TrainConfig,
    (RecipeConfig, "eval"): EvalConfig,
    (RecipeConfig, "export"): ExportConfig,
    (DataConfig, "sources"): [DataSourceConfig],
    (DataConfig, "eval_sources"): [DataSourceConfig],
}


def _check_choice(cls: type, name: str, value: Any, key: str) -> Any:
    if (cls, name) == (TrainConfig, "mixed_precision") and value is False:
        value = "no"  # YAML 1.1 reads an unquoted `no` as false
    choices = _CHOICES.get((cls, name))
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}.")
    if (cls, name) == (OptimConfig, "betas"):
        return tuple(float(b) for b in value)
    return _coerce(typing.get_type_hints(cls)[name], value, key)


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    """Check scalars against their annotation; YAML reads ``3e-4`` as a string, so numbers may be parsed."""
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} must be set (got null).")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                continue
        if option is str and isinstance(value, str):
            return value
        origin = typing.get_origin(option)
        if origin in (list, dict) and isinstance(value, origin):
            return value
    if any(option in (bool, int, float, str) for option in options):
        expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {expected}.")
    return value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["train.max_steps=10", "lora.enabled=false"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} must look like section.key=value (e.g. train.max_steps=10)."
            )
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a key below a non-mapping value.")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a recipe config from YAML (or defaults when ``path`` is None) and apply ``key=value`` overrides.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: an unknown key (named, with the allowed ones) or a value outside its choices.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {path} does not exist; pass --config recipes/configs/<name>.yaml"
            )
        values = yaml.safe_load(path.read_text()) or {}
    return config_from_dict(_merge(values, parse_overrides(overrides)))


def parse_recipe_args(description: str, argv: list[str] | None = None) -> RecipeConfig:
    """``--config path.yaml key=value ...`` -> the loaded :class:`RecipeConfig` (for recipe scripts)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML recipe config (recipes/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=10")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def config_from_dict(values: dict[str, Any]) -> RecipeConfig:
    """Build a :class:`RecipeConfig` from nested mappings (unknown keys raise :class:`ConfigError`)."""
    return _build(RecipeConfig, values, "")


# ---------------------------------------------------------------------------------------------
# Validation (before any training)
# ---------------------------------------------------------------------------------------------


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
    from flexretrofit.models.checkpoint import CheckpointError, read_model_type

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
    from transformers import PreTrainedConfig

    model_type = init_from_model_type(model)
    config, _ = PreTrainedConfig.get_config_dict(model.init_from)  # its config.json, checked just above
    if model_type == "flexmdm":
        if model.kind != "flexmdm":
            raise ConfigError(
                f"model.init_from={model.init_from} is a FlexMDM but model.kind={model.kind!r}; train an MDM "
                "baseline from a LLaDA checkpoint."
            )
        backbone = config["backbone_config"]
        return int(config.get("max_length") or backbone["max_sequence_length"] - 1)
    if model_type != "llada":
        raise ConfigError(
            f"model.init_from={model.init_from} has model_type={model_type!r}; expected a LLaDA ('llada') or "
            "FlexMDM ('flexmdm') checkpoint."
        )
    limit = int(config["max_sequence_length"])
    if model.kind == "flexmdm":
        limit = min(limit - 1, int(model.flex_config.get("max_length") or limit - 1))
    return limit


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
    if config.data.canvas_length is not None and config.model.kind != "mdm":
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
    if not 0.0 <= config.optim.warmup_ratio < 1.0:
        raise ConfigError(f"optim.warmup_ratio={config.optim.warmup_ratio} must lie in [0, 1).")
    layout = batch_layout(train, world_size)
    if config.data.streaming:
        _check_streaming(config, world_size)
    if config.lora.enabled:
        from flexretrofit.training.lora_check import check_lora_targets  # the model on the meta device

        check_lora_targets(config.model, config.lora)
    return layout


def check_output_dir(train: TrainConfig) -> None:
    """Refuse to start a fresh run (``resume_from: null``) in an ``output_dir`` that already holds files.

    Raises:
        ConfigError: naming the files found, ``train.resume_from`` and ``train.output_dir``.
    """
    out = Path(train.output_dir)
    if train.resume_from is not None or not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"train.output_dir={out} is not empty ({shown}); pass train.resume_from=latest to continue that run, "
            "or choose another train.output_dir (or delete the folder) to start afresh."
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
