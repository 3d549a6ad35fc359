"""Crash-safe, resumable per-example results (JSONL) and summary files.

A long evaluation writes one JSON row per example as soon as it is scored: appended, flushed and
fsynced, so a crash loses at most the row being written. Reopening the file resumes: the rows
already there are loaded, their ids are skipped by the runner, and a truncated last line (the
crash happened mid-write) is cut off the file. A damaged line anywhere else is an error, because
silently dropping finished work would bias the score.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
# The disk (or the user's quota) is full: freeing space is the fix, and a rerun resumes.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ResultsWriteError(OSError):
    """Results could not be written (disk full, read-only folder...). The rows written before stay in
    the file, so rerunning the same command resumes; ``str()`` is one line that says so."""

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return results_write_message(self.path, self)


def results_write_message(path: str | os.PathLike, error: OSError) -> str:
    """The one line for a failed write of results to ``path``."""
    reason = error.strerror or str(error) or type(error).__name__
    fix = "free space" if error.errno in DISK_FULL else "fix that"
    return (
        f"could not write results to {path}: {reason}; {fix} and rerun the same command: "
        "finished rows are kept"
    )


class ResultsWriter:
    """Append-only JSONL of result rows keyed by ``row[id_key]``, safe to reopen after a crash.

    >>> with ResultsWriter("out/samples.jsonl") as writer:   # doctest: +SKIP
    ...     for example in examples:
    ...         if example.id not in writer:
    ...             writer.write({"id": example.id, "correct": score(example)})

    ``write`` is thread-safe. Writing an id that is already present raises ``ValueError``.
    """

    def __init__(self, path: str | os.PathLike, id_key: str = "id") -> None:
        self.path = Path(path)
        self.id_key = id_key
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self.rows: list[dict[str, Any]] = _load_and_repair(self.path, id_key) if not created else []
            # Unbuffered: a failed write leaves no bytes in a buffer that close() would append later.
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as error:
            raise ResultsWriteError(self.path, error) from error
        self._ids = {row[id_key] for row in self.rows}
        self._lock = threading.Lock()
        if created:
            _fsync_directory(self.path.parent)  # make the new file's name durable too

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._ids

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def done_ids(self) -> frozenset:
        return frozenset(self._ids)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.id_key not in row:
            raise ValueError(f"result row has no {self.id_key!r} field: {dict(row)!r}")
        # ASCII escapes: a completion with lone surrogates (which UTF-8 cannot encode) is stored as it is.
        line = (json.dumps(dict(row), ensure_ascii=True) + "\n").encode("utf-8")
        with self._lock:
            if self._file.closed:
                raise ValueError(f"ResultsWriter for {self.path} is closed")
            if row[self.id_key] in self._ids:
                raise ValueError(f"{self.path} already has a row with {self.id_key}={row[self.id_key]!r}")
            self._append(line)
            self.rows.append(dict(row))
            self._ids.add(row[self.id_key])

    def _append(self, line: bytes) -> None:
        """Append ``line`` durably; on failure cut off what got written of it and raise
        :class:`ResultsWriteError` (if the cut fails too, reopening the file drops the torn line)."""
        fileno = self._file.fileno()
        start = os.fstat(fileno).st_size
        try:
            view = memoryview(line)
            while view:  # a nearly full disk may take part of the line only
                view = view[self._file.write(view) :]
            os.fsync(fileno)
        except OSError as error:
            try:
                os.ftruncate(fileno, start)
            except OSError:
                pass
            raise ResultsWriteError(self.path, error) from error

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ResultsFileError(ValueError):
    """A results file damaged somewhere other than its last line (finished work would be lost)."""


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results file, ignoring (not repairing) a truncated last line."""
    rows, _ = _parse(Path(path).read_bytes(), Path(path))
    return rows


def write_summary(path: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as indented JSON atomically (temp file, fsync, rename): a reader never
    sees half a summary, and a crash leaves the previous one in place."""
    path = Path(path)
    text = json.dumps(dict(summary), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    write_text_atomic(path, text)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file, fsync, rename): all or nothing.

    Raises:
        ResultsWriteError: the folder or the file could not be written (e.g. the disk is full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise ResultsWriteError(path, error) from error
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ResultsWriteError(path, error) from error
        raise
    _fsync_directory(path.parent)


def _parse(data: bytes, path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse complete rows. Returns (rows, byte length of the valid part)."""
    rows: list[dict[str, Any]] = []
    valid_end = 0
    lines = data.split(b"\n")
    # After the last "\n" comes either nothing or a line the crash cut short.
    complete, partial = lines[:-1], lines[-1]
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            valid_end += len(raw) + 1
            continue
        try:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            # A JSONDecodeError's own "line 1" counts lines within the row: report the column only.
            detail = (
                f"{error.msg} (column {error.colno})" if isinstance(error, json.JSONDecodeError) else error
            )
            if number == len(complete) and not partial:
                logger.warning("%s: dropping damaged last line %d (%s)", path, number, detail)
                return rows, valid_end
            raise ResultsFileError(
                f"{path}, line {number} is not a JSON object ({detail}); only a damaged last line is "
                "repaired automatically. Fix or delete that line, then rerun."
            ) from None
        rows.append(row)
        valid_end += len(raw) + 1
    if partial:
        logger.warning("%s: dropping truncated last line (%d bytes)", path, len(partial))
    return rows, valid_end


def _load_and_repair(path: Path, id_key: str) -> list[dict[str, Any]]:
    data = path.read_bytes()
    rows, valid_end = _parse(data, path)
    if valid_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(valid_end)
            handle.flush()
            os.fsync(handle.fileno())
    unique: list[dict[str, Any]] = []
    seen: set = set()
    for number, row in enumerate(rows, start=1):
        if id_key not in row:
            raise ResultsFileError(
                f"{path}: row {number} has no {id_key!r} field; is this a results file of this writer?"
            )
        if row[id_key] in seen:
            logger.warning("%s: duplicate %s=%r, keeping the first", path, id_key, row[id_key])
            continue
        seen.add(row[id_key])
        unique.append(row)
    return unique


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems do not support fsync on directories
    finally:
        os.close(handle)
