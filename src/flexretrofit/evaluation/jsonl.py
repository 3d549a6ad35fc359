"""Reading JSONL input files (data sets, task files) with errors that name the file and the line.

Every non-blank line must be one JSON object. Line numbers are 1-based positions in the file (blank
lines count), so an error points at the line an editor shows, not at a position inside that line.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class InputFileError(ValueError):
    """An input file that cannot be used as it is; the message names the file and line and what to fix."""


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputFileError: ``path`` is a folder, is not UTF-8 (or not gzip), or a line is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no file at {path}")
    if not path.is_file():
        raise InputFileError(f"{path} is a folder; pass a JSONL file (one JSON object per line)")
    opener = gzip.open if path.suffix == ".gz" else open
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                records.append((number, _parse_line(path, number, line)))
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise InputFileError(
            f"{path} cannot be read as UTF-8 JSONL{' (gzip)' if opener is gzip.open else ''} "
            f"({type(error).__name__}); pass a JSONL file, one JSON object per line"
        ) from None
    return records


def require_fields(
    source: str | os.PathLike,
    number: int,
    record: dict[str, Any],
    fields: Sequence[str],
    *,
    where: str = "line",
) -> None:
    """Raise :class:`InputFileError` unless ``record`` (``where`` ``number`` of ``source``: a file's line,
    a data set's row) has every one of ``fields``, each a string."""
    missing = [field for field in fields if field not in record]
    if missing:
        raise InputFileError(
            f"{source}, {where} {number}: no {' or '.join(map(repr, missing))} field; "
            f"every record needs {list(fields)}"
        )
    wrong = [field for field in fields if not isinstance(record[field], str)]
    if wrong:
        kinds = ", ".join(f"{field!r} is {type(record[field]).__name__}, not text" for field in wrong)
        raise InputFileError(f"{source}, {where} {number}: {kinds}; {list(fields)} must all be strings")


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputFileError(
            f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno}); "
            "fix or remove that line"
        ) from None
    if not isinstance(record, dict):
        raise InputFileError(
            f"{path}, line {number}: a JSON {type(record).__name__}, not an object; "
            "each line must be one JSON object ({...})"
        )
    return record
