"""Small builders a recipe composes: accelerator, tokenizer, model (+ LoRA), datasets, optimizer, schedule.

Each takes a section of the :class:`~flexretrofit.training.config.RecipeConfig` and returns one object;
the recipe decides the order, the :class:`~flexretrofit.training.trainer.Trainer` runs the loop.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration, set_seed
from torch import nn
from transformers import PreTrainedTokenizerBase, get_cosine_with_min_lr_schedule_with_warmup

from flexretrofit.data import (
    CodeInfillFormat,
    FixedCanvasFormat,
    GSM8KFormat,
    PromptCompletionFormat,
    TextSource,
    format_dataset,
    load_chunked_mixture,
    record_problem,
)
from flexretrofit.models import load_tokenizer
from flexretrofit.models.lora import NEW_MODULES, apply_lora
from flexretrofit.training.config import (
    ConfigError,
    DataConfig,
    DataSourceConfig,
    LoRAConfig,
    ModelConfig,
    OptimConfig,
    RecipeConfig,
)
from flexretrofit.training.methods import training_method
from flexretrofit.training.validation import check_report_to, init_from_model_type


def build_accelerator(config: RecipeConfig) -> Accelerator:
    """An :class:`Accelerator` for the launch environment (single process, DDP or DeepSpeed).

    A multi-process launch without CUDA uses gloo: DeepSpeed ZeRO-3 on CPU only syncs with it. The
    learning-rate schedule is stepped by the trainer once per optimizer step, not by Accelerate.
    ``train.report_to`` (``tensorboard`` / ``wandb``) becomes Accelerate's ``log_with``; TensorBoard writes
    under ``<output_dir>/tensorboard``.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = (
        [InitProcessGroupKwargs(backend="gloo")] if distributed and not torch.cuda.is_available() else []
    )
    check_report_to(config.train)  # one clear line now, not an import error from a tracker later
    report_to = config.train.report_to
    return Accelerator(
        mixed_precision=config.train.mixed_precision,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=handlers,
        log_with=None if report_to == "none" else report_to,
        project_config=ProjectConfiguration(
            project_dir=config.train.output_dir,
            logging_dir=str(Path(config.train.output_dir) / "tensorboard"),
        ),
    )


def build_tokenizer(model: ModelConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(model.tokenizer or model.init_from)


def build_model(model: ModelConfig, lora: LoRAConfig, seed: int = 0) -> nn.Module:
    """The model to train, with activation checkpointing and LoRA as configured.

    The method's loader (:data:`~flexretrofit.training.methods.TRAINING_METHODS`) picks the model:

    - ``kind: flexmdm`` from a LLaDA checkpoint: a fresh retrofit (:meth:`FlexMDMForMaskedDiffusion.from_llada`,
      with ``model.flex_config``); from a FlexMDM folder: that model (e.g. the retrofit, for instruction tuning).
    - ``kind: mdm``: the LLaDA backbone, which projects to the vocabulary only at MASK positions.

    With LoRA, the adapters and the FlexMDM's new modules are trainable; without, every weight is.
    Freshly initialised weights (new modules, LoRA) come from ``seed``: every process must build the same
    model (ZeRO-3 keeps each rank's own shard of it; nothing is broadcast).
    """
    set_seed(seed)
    net = training_method(model.kind).load(model, init_from_model_type(model), getattr(torch, model.dtype))
    net.config.use_cache = False
    if model.activation_checkpointing:
        net.activation_checkpointing_enable()
    if lora.enabled:
        net = apply_lora(net, lora.targets, r=lora.r, alpha=lora.alpha, dropout=lora.dropout)
    else:
        net.requires_grad_(True)
    return net


def base_model(model: nn.Module) -> nn.Module:
    """The FlexMDM or LLaDA inside a PEFT wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

# The column each instruction format reads first (checked to exist when the data is loaded).
_FORMAT_FIELD = {
    "gsm8k": ("question_field", "question"),
    "infill": ("code_field", "code"),
    "prompt_completion": ("completion_field", "completion"),
}


def _text_source(source: DataSourceConfig, text_field: str | None = None) -> TextSource:
    path = source.hub if source.hub is not None else source.path
    return TextSource(
        path=tuple(path) if isinstance(path, list) else path,
        name=source.name,
        split=source.split,
        text_field=text_field or source.text_field,
        weight=source.weight,
    )


def _instruction_format(data: DataConfig, tokenizer: PreTrainedTokenizerBase, kind: str, seed: int):
    kwargs = dict(data.format_kwargs)
    if data.format == "gsm8k":
        sample_format = GSM8KFormat(tokenizer, max_length=data.max_length, **kwargs)
    elif data.format == "infill":
        kwargs.setdefault("seed", seed)
        sample_format = CodeInfillFormat(tokenizer, max_length=data.max_length, **kwargs)
    else:
        sample_format = PromptCompletionFormat(tokenizer, max_length=data.max_length, **kwargs)
    if training_method(kind).fixed_length and data.canvas_length is not None:
        sample_format = FixedCanvasFormat(
            sample_format, tokenizer.eos_token_id, total_length=data.canvas_length
        )
    return sample_format


def _load_samples(
    sources: list[DataSourceConfig],
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    kind: str,
    seed: int,
) -> datasets.Dataset | datasets.IterableDataset:
    if data.format == "corpus":
        return load_chunked_mixture(
            [_text_source(s) for s in sources],
            tokenizer,
            data.max_length,
            min_length=data.min_length,
            add_bos=data.add_bos,
            streaming=data.streaming,
            seed=seed,
            num_proc=data.num_proc,
        )
    key, default = _FORMAT_FIELD[data.format]
    sample_format = _instruction_format(data, tokenizer, kind, seed)
    source = _text_source(sources[0], text_field=data.format_kwargs.get(key, default))
    # The first records of a local .jsonl are checked before loading: a missing field names file and line.
    raw = source.load(data.streaming, record_problem=lambda record: record_problem(sample_format, record))
    # A bad record past the first ones: one line naming the source (a stream meets it while training).
    return format_dataset(raw, sample_format, num_proc=data.num_proc, where=str(source.path))


def build_datasets(
    config: RecipeConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[datasets.Dataset | datasets.IterableDataset, datasets.Dataset | None]:
    """Tokenised samples (``input_ids``, ``prompt_mask``, ``length``) for training and evaluation.

    Without ``data.eval_sources``, ``eval.num_samples`` samples are held out of the training data (a seeded
    split, the same in every process); with ``eval.num_samples: 0`` there is no evaluation set.

    With ``data.streaming`` the training set is a lazy ``IterableDataset`` (nothing is read or tokenised
    here) and the evaluation set the first ``eval.num_samples`` samples of ``data.eval_sources``.
    """
    data, seed = config.data, config.train.seed
    train = _load_samples(data.sources, data, tokenizer, config.model.kind, seed)
    if data.streaming:
        return train, _streamed_eval_samples(config, tokenizer)
    if len(train) == 0:
        raise ConfigError(
            f"no training samples left after formatting {[s.path or s.hub for s in data.sources]} with "
            f"data.format={data.format!r} and data.max_length={data.max_length}; check the files and the limit."
        )
    num_eval = config.eval.num_samples
    if data.eval_sources:
        evaluation = _load_samples(data.eval_sources, data, tokenizer, config.model.kind, seed)
        evaluation = evaluation.select(range(min(num_eval, len(evaluation))))
    elif num_eval > 0:
        if num_eval >= len(train):
            raise ConfigError(
                f"eval.num_samples={num_eval} would hold out all {len(train)} training samples; lower it or give "
                "data.eval_sources."
            )
        split = train.train_test_split(test_size=num_eval, shuffle=True, seed=seed)
        train, evaluation = split["train"], split["test"]
    else:
        evaluation = None
    return train, evaluation


def _streamed_eval_samples(
    config: RecipeConfig, tokenizer: PreTrainedTokenizerBase
) -> datasets.Dataset | None:
    """The first ``eval.num_samples`` samples of the streamed ``data.eval_sources`` (only those are read)."""
    data, num_eval = config.data, config.eval.num_samples
    if num_eval <= 0 or not data.eval_sources:
        return None
    stream = _load_samples(data.eval_sources, data, tokenizer, config.model.kind, config.train.seed)
    rows = list(stream.take(num_eval))
    return datasets.Dataset.from_list(rows) if rows else None


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------


def is_new_module_parameter(name: str) -> bool:
    """Whether parameter ``name`` belongs to a module the FlexMDM adds (time embedding, AdaLN, insertion head)."""
    return not set(name.split(".")).isdisjoint(NEW_MODULES)


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in up to four groups: {adapters or backbone, new modules} x
    {matrices with weight decay, vectors without}. Each group carries a ``name`` for the logs."""
    groups: dict[str, dict] = {}
    new_lr = optim.new_module_lr if optim.new_module_lr is not None else optim.lr
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        new = is_new_module_parameter(name)
        decay = param.ndim >= 2
        key = ("new_modules" if new else "main") + ("" if decay else "_no_decay")
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr": new_lr if new else optim.lr,
                "weight_decay": optim.weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
    if not groups:
        raise ConfigError("the model has no trainable parameters; enable LoRA or set lora.enabled=false.")
    return torch.optim.AdamW(list(groups.values()), betas=tuple(optim.betas), eps=optim.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int):
    """Linear warmup over ``ceil(warmup_ratio * total_steps)`` steps, then cosine decay to ``min_lr_ratio``.

    transformers' ``cosine_with_min_lr`` schedule (with ``min_lr_ratio: 0`` the same as
    ``get_cosine_schedule_with_warmup``), stepped once per optimizer step: the first step runs at lr 0 and step
    ``k < warmup`` at ``k / warmup`` of the peak. The warmup length is the one transformers' ``Trainer`` derives
    from a ``warmup_ratio``. A :class:`torch.optim.lr_scheduler.LambdaLR` whose state is plain numbers.
    """
    warmup = math.ceil(optim.warmup_ratio * total_steps)
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, min_lr_rate=optim.min_lr_ratio
    )
