"""Training logs: one line per event on stdout and one JSON object per line in ``log.jsonl``.

Only the main process writes. Every record has an ``event`` (``start``, ``train``, ``eval``, ``checkpoint``,
``resume``, ``export``, ``end``) and, except ``start``, the optimizer ``step`` it belongs to.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e5) and math.isfinite(value):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


class MetricsLogger:
    """Append records to ``path`` (JSONL) and print them, on the main process only.

    Args:
        path: the JSONL file (its folder is created); None logs to stdout only.
        enabled: False on non-main processes.
    """

    def __init__(self, path: str | os.PathLike | None, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.path = Path(path) if path is not None else None
        self.stream = stream or sys.stdout
        if self.enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: str, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **values}
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        shown = " | ".join(
            f"{k} {_format_value(v)}" for k, v in values.items() if not isinstance(v, dict | list)
        )
        tqdm.write(f"[{event}] {shown}", file=self.stream)  # above a progress bar, if one is shown
        self.stream.flush()


def read_log(path: str | os.PathLike, event: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (optionally only one ``event``), in order."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if event is None or r["event"] == event]
