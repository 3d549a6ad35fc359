"""Which slice of a benchmark this process runs, and what the summary records about the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ProcessLayout:
    """Which slice this process runs and who merges. ``barrier`` is None for independent jobs."""

    rank: int
    world_size: int
    is_merger: bool
    device: torch.device
    barrier: Callable[[], None] | None


def process_layout(settings: Mapping[str, Any]) -> ProcessLayout:
    """Explicit shards (``--num-shards``/``--shard-index``: independent jobs, no barrier, the job that
    finds every row present merges) or Accelerate's processes (the main process merges after a barrier);
    a plain ``python`` run is one process of one. ``settings`` are already checked (:mod:`.settings`)."""
    if settings["num_shards"] is not None:
        world, rank = settings["num_shards"], settings["shard_index"]
        device = torch.device(settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        return ProcessLayout(rank, world, True, device, None)
    from accelerate import PartialState

    distributed_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    state = PartialState(backend="gloo") if distributed_cpu else PartialState()
    device = torch.device(settings["device"]) if settings["device"] else state.device
    barrier = state.wait_for_everyone if state.num_processes > 1 else None
    return ProcessLayout(state.process_index, state.num_processes, state.is_main_process, device, barrier)


def environment_info(layout: ProcessLayout) -> dict[str, Any]:
    """Versions, device and process count, for the summary."""
    import transformers

    from flexretrofit import __version__

    return {
        "flexretrofit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(layout.device),
        "device_name": torch.cuda.get_device_name(layout.device)
        if layout.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "num_processes": layout.world_size,
        "torch_threads": torch.get_num_threads(),
    }
