"""Checkpoints that resume exactly, and which of them are complete enough to resume from.

A checkpoint folder ``<output_dir>/checkpoints/step_0000042/`` holds:

- what :meth:`accelerate.Accelerator.save_state` writes: model weights (``model.safetensors``), optimizer
  state and every process's RNG states (torch, numpy, python), read back with ``weights_only=True``. Under
  DeepSpeed the weights and optimizer are instead DeepSpeed's own ZeRO shards (``pytorch_model/*.pt``,
  written and read by DeepSpeed, which needs them to resume a sharded optimizer); the export is safetensors;
- ``trainer_state.json``: the step, the learning-rate scheduler state, the batch sampler's
  ``(epoch, position)``, the batch layout and the config, as plain JSON.

Each checkpoint is written to ``step_N.tmp`` and renamed once complete, so a crash mid-save never leaves
a folder that looks resumable; a failed write (a full disk) removes the ``.tmp`` folder and stops the run
with one line (:class:`CheckpointWriteError`). ``trainer_state.json`` also records a SHA-256 of every other
file (``checksums``), so a flipped bit is found on resume, not trained on. Loading restores all of it; the
data then continues with the next unseen global batch and the noise of every later step is identical (the
collators seed it from the step).

When choosing the checkpoint to resume from, folders that are not complete (no weights, an empty or
truncated file, an unreadable ``trainer_state.json``) or whose files do not match their checksums are
skipped with a warning (checkpoints written before checksums were recorded are taken as they are). The
final model export lives in :mod:`flexretrofit.training.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors import SafetensorError

from flexretrofit.training.config import ConfigError

TRAINER_STATE = "trainer_state.json"
CHECKSUMS = "checksums"  # the trainer-state key: {relative file path: SHA-256 hex digest}
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first.

    Unfinished ``.tmp`` folders are ignored; a ``step_N`` folder that is incomplete (see
    :func:`checkpoint_problem`) is skipped with a warning.
    """
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not (_STEP_DIR.match(path.name) and path.is_dir()):
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            found.append(path)
        else:
            warnings.warn(f"skipping incomplete checkpoint {path}: {problem}", stacklevel=2)
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (header readable, data as long as it says), or None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is empty or truncated"
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            return f"{path.name} is truncated"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return f"{path.name} has an unreadable header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return f"{path.name} is truncated" if 8 + header_len + end > size else None


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What makes checkpoint folder ``path`` unusable for a resume, or None when it is complete.

    Complete: a ``trainer_state.json`` that parses, model weights (``model.safetensors``, a sharded
    ``model.safetensors.index.json`` with its shards, or DeepSpeed's ``pytorch_model/``), and no empty or
    truncated file (safetensors headers agree with the file size; torch files are whole zip archives).
    """
    path = Path(path)
    state = path / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        json.loads(state.read_text())["step"]
    except (ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} is unreadable"
    index = path / "model.safetensors.index.json"
    has_weights = (path / "model.safetensors").is_file() or (path / "pytorch_model").is_dir()
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError):
            return f"{index.name} is unreadable"
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            return f"weight shard(s) {missing[:3]} missing"
        has_weights = True
    if not has_weights:
        return "no model weights (model.safetensors or pytorch_model/)"
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.stat().st_size == 0:
            return f"{file.relative_to(path)} is empty"
        if file.suffix == ".safetensors":
            problem = _safetensors_problem(file)
            if problem:
                return problem
        elif file.suffix in (".bin", ".pt", ".pkl", ".pth") and not zipfile.is_zipfile(file):
            return f"{file.relative_to(path)} is truncated"
    return None


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_checksums(path: Path) -> dict[str, str]:
    """SHA-256 of every file of checkpoint folder ``path`` but ``trainer_state.json`` (which stores them)."""
    return {
        file.relative_to(path).as_posix(): file_digest(file)
        for file in sorted(p for p in path.rglob("*") if p.is_file())
        if file.name != TRAINER_STATE
    }


def checksum_problem(path: str | os.PathLike) -> str | None:
    """Which file of checkpoint ``path`` differs from the checksum in its trainer state (a flipped bit, a
    rewritten file), or None. A checkpoint from before checksums were recorded has nothing to compare."""
    path = Path(path)
    try:
        recorded = json.loads((path / TRAINER_STATE).read_text()).get(CHECKSUMS)
    except (OSError, ValueError, AttributeError):
        return f"{TRAINER_STATE} is unreadable"
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        return f"{TRAINER_STATE} has unreadable checksums"
    for name, expected in sorted(recorded.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file_digest(file) != expected:
            return f"{name} does not match its recorded checksum (corrupted on disk)"
    return None


def resolve_resume(resume_from: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: ``latest`` (the newest complete one whose files match their checksums;
    None if there is none yet), a folder, or None. A folder given explicitly must be complete and intact."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        # Newest first: only the checkpoint taken (and the corrupted ones before it) is read in full.
        for path in reversed(list_checkpoints(output_dir)):
            problem = checksum_problem(path)
            if problem is None:
                return path
            warnings.warn(f"skipping corrupted checkpoint {path}: {problem}", stacklevel=2)
        return None
    path = Path(resume_from)
    problem = checkpoint_problem(path) or checksum_problem(path)
    if problem is not None:
        raise FileNotFoundError(
            f"train.resume_from={resume_from} is not a complete checkpoint ({problem}); pass a "
            f"folder like {checkpoint_dir(output_dir, 100)} or 'latest'."
        )
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Save the accelerator state plus ``state`` (JSON) for ``step``; keep the newest ``keep`` checkpoints.

    Collective: every process must call it.

    Raises:
        CheckpointWriteError: a file could not be written (a full disk); the partial ``.tmp`` folder is
            removed, so the newest complete checkpoint stays the one a resume takes.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    try:
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            # Digests of the files as written, stored beside them: a later bit flip shows on resume.
            state = {**state, CHECKSUMS: checkpoint_checksums(tmp)}
            (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space; never mistaken for a checkpoint anyway
        raise CheckpointWriteError.from_error(tmp, error, output_dir) from error
    if accelerator.is_main_process and keep is not None and keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


class CheckpointWriteError(RuntimeError):
    """A checkpoint or the export could not be written (a full disk, a read-only folder); one line that
    names the folder, the reason and the step a rerun resumes from."""

    @classmethod
    def from_error(
        cls, target: Path, error: BaseException, output_dir: str | os.PathLike, what: str = "checkpoint"
    ) -> CheckpointWriteError:
        checkpoints = list_checkpoints(output_dir)
        step = int(_STEP_DIR.match(checkpoints[-1].name)[1]) if checkpoints else 0
        return cls(
            f"could not write {what} to {target}: {write_failure(error)}; free space and rerun the same command "
            f"with train.resume_from=latest to resume from step {step}."
        )


def write_failure(error: BaseException) -> str:
    """The reason of a failed write: ``No space left on device`` from an OSError, or from the OS error code
    inside a safetensors error (``... Os { code: 28, ... }``)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    code = re.search(r"code: (\d+)", str(error))
    return os.strerror(int(code[1])) if code else " ".join(str(error).split()) or type(error).__name__


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike, max_steps: int) -> dict[str, Any]:
    """Check ``path``'s trainer state against the run (:func:`check_trainer_state`), then restore the
    accelerator state (model, optimizer, RNG) and return the trainer state."""
    path = Path(path)
    state = check_trainer_state(path, max_steps)
    accelerator.load_state(str(path))
    return state


def check_trainer_state(path: Path, max_steps: int) -> dict[str, Any]:
    """The trainer state of checkpoint ``path``, refused (ConfigError, one line) when it cannot belong to a
    run of ``max_steps`` steps: a step that is not a whole number in ``[0, max_steps]``, that differs from
    the folder's ``step_N``, or that the learning-rate schedule does not share (a hand-edited file)."""

    def refuse(problem: str) -> ConfigError:
        return ConfigError(
            f"checkpoint {path}: {TRAINER_STATE} {problem}; it was not written by this run. Resume from another "
            "checkpoint (train.resume_from=<folder>) or delete this one."
        )

    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError) as error:
        raise refuse(f"cannot be read ({error})") from None
    if not isinstance(state, dict):
        raise refuse("is not a JSON object")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= max_steps:
        raise refuse(f"says step {step!r}, outside [0, train.max_steps={max_steps}]")
    named = _STEP_DIR.match(path.name)
    if named and int(named[1]) != step:
        raise refuse(f"says step {step} but the folder is {path.name}")
    scheduler = state.get("scheduler")
    if not isinstance(scheduler, dict) or scheduler.get("last_epoch") != step:
        last = scheduler.get("last_epoch") if isinstance(scheduler, dict) else None
        raise refuse(f"says step {step} but its learning-rate schedule is at step {last!r}")
    sampler = state.get("sampler")
    if not isinstance(sampler, dict):
        raise refuse("has no sampler state")
    per_rank = sampler.get("per_rank")
    for i, position in enumerate(per_rank if isinstance(per_rank, list) else [sampler]):
        where = f"sampler (rank {i})" if per_rank is not None else "sampler"
        if not isinstance(position, dict):
            raise refuse(f"has an unreadable {where} state")
        # Each step consumes one batch, so neither counter can pass the step; a huge one would only
        # fail later, deep in the sampler or its random generator.
        for key in ("epoch", "position"):
            value = position.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= step:
                raise refuse(f"says {where} {key} {value!r}, outside [0, step {step}]")
        window = position.get("window", 0)
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window < 2**62:
            raise refuse(f"says {where} window {window!r}, not a whole number >= 0")
    return state
