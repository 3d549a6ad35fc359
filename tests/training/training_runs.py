"""Shared by the trainer tests: the tiny CPU retrofit config under a test's folders, the trainer the
recipe would build from it, in-process, and a free port for launching several processes."""

import socket
from pathlib import Path

import yaml

from flexretrofit.training import (
    Trainer,
    build_accelerator,
    build_datasets,
    build_model,
    build_tokenizer,
    config_from_dict,
    read_log,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on now, for the main process of a multi-process launch."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(tiny, out_dir, **changes):
    """The tiny CPU retrofit config with its paths under pytest's tmp dirs; ``changes``: {"train.max_steps": 4}.

    ``tiny``: ``(root, data)`` with the LLaDA checkpoint in ``root / "llada"`` and ``data["corpus"]``.
    """
    root, data = tiny
    values = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_retrofit_cpu.yaml").read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["corpus"])}]
    values["train"]["output_dir"] = str(out_dir)
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        values[section][key] = value
    return config_from_dict(values)


def make_trainer(config, callbacks=()):
    """What the recipe does, in-process."""
    accelerator = build_accelerator(config)
    validate_config(config, accelerator.num_processes)
    tokenizer = build_tokenizer(config.model)
    model = build_model(config.model, config.lora, seed=config.train.seed)
    train_set, eval_set = build_datasets(config, tokenizer)
    return Trainer(config, accelerator, model, train_set, eval_set, tokenizer, callbacks=callbacks)


def train_losses(output_dir):
    return {r["step"]: r["loss"] for r in read_log(Path(output_dir) / "log.jsonl", "train")}
