"""Training: recipe configs, builders, objectives, the Accelerate trainer, checkpoints and export.

The method (``model.kind``: FlexMDM or the LLaDA MDM baseline) is looked up in one table,
:data:`~flexretrofit.training.methods.TRAINING_METHODS` (model class and loader, collator, objective, model card).

Recipes (``recipes/retrofit_llada.py``, ``recipes/instruct.py``) compose these pieces top to bottom::

    config = load_config(path, overrides)
    accelerator = build_accelerator(config)
    validate_config(config, accelerator.num_processes)      # every check before any weight is loaded
    tokenizer = build_tokenizer(config.model)
    model = build_model(config.model, config.lora)
    train_set, eval_set = build_datasets(config, tokenizer)
    trainer = Trainer(config, accelerator, model, train_set, eval_set, tokenizer)
    trainer.train()
    trainer.export()

and run as scripts through :func:`run_recipe`, which turns a configuration mistake into one line on stderr
and exit status 2.
"""

from flexretrofit.training.builders import (
    base_model,
    build_accelerator,
    build_datasets,
    build_model,
    build_optimizer,
    build_scheduler,
    build_tokenizer,
)
from flexretrofit.training.checkpointing import list_checkpoints, load_checkpoint, save_checkpoint
from flexretrofit.training.cli import run_recipe
from flexretrofit.training.config import (
    ConfigError,
    RecipeConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    parse_recipe_args,
)
from flexretrofit.training.export import export_model, load_adapter_export
from flexretrofit.training.methods import TRAINING_METHODS, TrainingMethod, training_method
from flexretrofit.training.metrics import MetricsLogger, read_log
from flexretrofit.training.objectives import FlexMDMObjective, LossParts, MDMObjective
from flexretrofit.training.trainer import Trainer, TrainingDiverged
from flexretrofit.training.validation import batch_layout, validate_config

__all__ = [
    "TRAINING_METHODS",
    "ConfigError",
    "FlexMDMObjective",
    "LossParts",
    "MDMObjective",
    "MetricsLogger",
    "RecipeConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingMethod",
    "base_model",
    "batch_layout",
    "build_accelerator",
    "build_datasets",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_tokenizer",
    "config_from_dict",
    "export_model",
    "list_checkpoints",
    "load_adapter_export",
    "load_checkpoint",
    "load_config",
    "parse_overrides",
    "parse_recipe_args",
    "read_log",
    "run_recipe",
    "save_checkpoint",
    "training_method",
    "validate_config",
]
