"""Training configuration: dataclasses loaded from YAML, checked before any training starts.

A recipe config has seven sections, each a dataclass below: ``model``, ``lora``, ``data``, ``optim``,
``train``, ``eval`` and ``export``. :func:`load_config` reads a YAML file, applies ``key=value``
overrides (``train.max_steps=10``, ``lora.enabled=false``) and fails on unknown keys, naming the key and
the keys allowed there. :func:`flexretrofit.training.validation.validate_config` then checks what needs the world (files,
the model's length limit, the batch layout over the processes). Both run before the model is built.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from flexretrofit.methods import Method


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
    kind: Method = "flexmdm"
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
        balance: ``tokens`` regroups every noised global batch into micro-batches of about equal cost
            (rows of similar ``x_t`` width together, :mod:`flexretrofit.data.balancing`), so no process waits
            for the one that drew the largest times; ``none`` keeps ``train.micro_batch_size`` rows per
            micro-batch. The gradient is the same either way (dropout masks follow micro-batches, so with
            dropout the draws differ).
        max_tokens_per_micro_batch: with ``balance: tokens``, the most ``rows x padded width`` positions of a
            micro-batch (peak memory); None = ``micro_batch_size x (longest sample + 1)``, today's widest
            micro-batch. It may not be lower than that: every global batch must fit.
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
    balance: Literal["none", "tokens"] = "none"
    max_tokens_per_micro_batch: int | None = None


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
    choices = _literal_choices(typing.get_type_hints(cls)[name])
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {list(choices)}.")
    if (cls, name) == (OptimConfig, "betas"):
        return tuple(float(b) for b in value)
    return _coerce(typing.get_type_hints(cls)[name], value, key)


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal[...]`` annotation (``| None`` adds None); () for any other."""
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    choices = tuple(v for o in options if typing.get_origin(o) is typing.Literal for v in typing.get_args(o))
    return choices + (None,) if choices and type(None) in options else choices


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
        # A newline or space inside the key would otherwise reach the error messages as a plain space.
        if any(not part or any(c.isspace() for c in part) for part in parts):
            raise ConfigError(
                f"override {item!r}: the key {key.strip()!r} holds a newline, space or empty part; write it as "
                "section.key=value (e.g. train.max_steps=10), one override per argument."
            )
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
        if not isinstance(values, dict):
            raise ConfigError(
                f"config {path} must be a mapping of settings (model:, data:, train: ...), not a "
                f"{type(values).__name__}; see recipes/configs/*.yaml."
            )
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
