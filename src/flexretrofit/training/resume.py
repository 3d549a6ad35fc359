"""What a checkpoint saves besides weights, optimizer and RNG (``trainer_state.json``), and the checks that a
run may resume from it: the same global batch, the same kind of data reading, the data position restored.

A map-style dataset's sampler is at the same place on every rank, so its state is saved once. A streamed
dataset is read by every rank from its own share of the stream, so every rank's position is saved
(``{"per_rank": [...]}``, gathered) and a streamed run resumes with the same number of processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from flexretrofit.training.config import ConfigError


def trainer_state(
    step: int,
    scheduler: Any,
    sampler: dict[str, Any],
    world_size: int,
    micro_batch_size: int,
    accumulation: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Everything besides weights, optimizer and RNG that exact resume needs, as plain JSON values."""
    return {
        "step": step,
        "scheduler": jsonable(scheduler.state_dict()),
        "sampler": sampler,
        "world_size": world_size,
        "micro_batch_size": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "config": config,
    }


def check_batch_layout(state: dict[str, Any], path: Path, global_batch_size: int) -> None:
    """Raise :class:`ConfigError` unless the checkpoint was trained with ``global_batch_size`` rows a step.

    Another split of the same global batch over processes and accumulation steps resumes: the slot layout is
    the same, so the data and the noise are too (only the float summation order differs).
    """
    saved = state["world_size"] * state["micro_batch_size"] * state["gradient_accumulation_steps"]
    if saved != global_batch_size:
        raise ConfigError(
            f"checkpoint {path} was trained with a different global batch size; resume with "
            f"train.global_batch_size={saved}."
        )


def sampler_state(sampler: Any, streaming: bool) -> dict[str, Any]:
    """The data position to save (collective when ``streaming``: every rank's position is gathered)."""
    if not streaming:
        return sampler.state_dict()  # the same on every rank
    return {"per_rank": gather_object([sampler.state_dict()])}


def load_sampler_state(
    sampler: Any, state: dict[str, Any], path: Path, *, streaming: bool, world_size: int, rank: int
) -> None:
    """Restore the data position ``state`` saved by :func:`sampler_state` into this rank's ``sampler``.

    Raises:
        ConfigError: ``data.streaming`` differs from the checkpoint's, a streamed checkpoint of another number of
            processes, or a sampler state that does not fit this run.
    """
    per_rank = state.get("per_rank")
    if streaming != (per_rank is not None):
        raise ConfigError(
            f"checkpoint {path} was trained {'with' if per_rank is not None else 'without'} data.streaming; "
            "resume with the same data.streaming setting."
        )
    if per_rank is None:
        try:
            sampler.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"checkpoint {path}: its sampler state does not fit this run ({error})."
            ) from None
        return
    if len(per_rank) != world_size:
        raise ConfigError(
            f"checkpoint {path} streamed its data over {len(per_rank)} processes, this run has "
            f"{world_size}; a streamed run resumes with the same number of processes."
        )
    sampler.load_state_dict(per_rank[rank])


def jsonable(value: Any) -> Any:
    """Scheduler state as JSON: numbers and lists pass, anything else (a callable) becomes None."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return None
