"""The progress bar of a training run, and the config as flat scalars for the trackers' hyperparameter tables."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm


class ProgressBar:
    """A tqdm bar over the optimizer steps (``initial`` of ``total`` already done): rate, ETA, loss and lr.

    Shown on the main process only, and only when ``stream`` (default stderr) is a terminal, unless ``force``;
    the log lines (``log.jsonl`` and stdout) are written either way.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        force: bool = False,
    ):
        stream = stream or sys.stderr
        shown = enabled and (force or (hasattr(stream, "isatty") and stream.isatty()))
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            file=stream,
            disable=not shown,
            dynamic_ncols=True,
            mininterval=0.0 if force else 0.1,
        )

    def update(self, metrics: dict[str, Any]) -> None:
        """One optimizer step done; ``metrics`` from :meth:`Trainer.train_step` (``loss``, ``lr_*``)."""
        postfix = {"loss": f"{metrics['loss']:.4f}"} if "loss" in metrics else {}
        lr = next((v for k, v in metrics.items() if k.startswith("lr_")), None)
        if lr is not None:
            postfix["lr"] = f"{lr:.2e}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"train": {"seed": 0}}`` -> ``{"train.seed": 0}``; lists and None become strings (what TensorBoard's
    hyperparameter table accepts)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat
