"""One run per output folder: an advisory lock file inside it, held until the process ends.

Two processes resuming the same training ``output_dir`` would both train and both export; two evaluations
on one ``--output-dir`` would write every row twice. :func:`lock_output_dir` takes a non-blocking
``fcntl.flock`` on ``<dir>/run.lock`` (``run-<tag>.lock`` for independent shards) and keeps it for the
life of the process: the kernel drops it when the process exits, however it ends, so a crashed run never
leaves a stale lock. The lock file stays behind; it holds the owner's pid for the conflict message.

Within one process taking the same lock again is a no-op (a resumed run built again in-process, the maze
demo's consecutive trainings): the lock guards against other processes only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_PREFIX = "run"
LOCK_SUFFIX = ".lock"

_held: dict[Path, IO[str]] = {}  # lock file -> its open file, kept open (and so locked) until exit


class OutputDirBusy(RuntimeError):
    """Another process holds the output folder's lock; the message names the folder and its pid."""


def lock_path(output_dir: str | os.PathLike, tag: str = "") -> Path:
    """The lock file of ``output_dir`` (``tag``: one of several independent runs sharing the folder)."""
    name = f"{LOCK_PREFIX}-{tag}{LOCK_SUFFIX}" if tag else f"{LOCK_PREFIX}{LOCK_SUFFIX}"
    return Path(output_dir) / name


def is_lock_file(name: str) -> bool:
    """Whether a file name in an output folder is one of these lock files (not a run's output)."""
    return name.startswith(LOCK_PREFIX) and name.endswith(LOCK_SUFFIX)


def lock_output_dir(output_dir: str | os.PathLike, tag: str = "", what: str = "output_dir") -> Path:
    """Create ``output_dir`` if needed and lock it for this process until it exits.

    Args:
        output_dir: the run's folder.
        tag: a separate lock for one of several runs that may share the folder (an evaluation shard).
        what: how the folder is named in the message (``train.output_dir``, ``--output-dir``).

    Returns:
        the lock file.

    Raises:
        OutputDirBusy: another process holds the lock (one line: the folder, the pid, what to do).
    """
    path = lock_path(output_dir, tag).resolve()
    if path in _held:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # "a+" neither truncates the owner's pid before the lock is ours nor fails when the file exists.
    handle = open(path, "a+")  # noqa: SIM115 - kept open: closing it would drop the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise OutputDirBusy(
            f"another run is using {Path(output_dir)} (pid {owner}); wait for it or choose another {what}."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[path] = handle
    return path


def release_output_dir(output_dir: str | os.PathLike, tag: str = "") -> None:
    """Drop this process's lock on ``output_dir`` early (it is dropped at exit anyway)."""
    handle = _held.pop(lock_path(output_dir, tag).resolve(), None)
    if handle is not None:
        handle.close()  # closing the only descriptor releases the flock
