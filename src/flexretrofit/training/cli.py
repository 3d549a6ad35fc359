"""Running a recipe as a script: a configuration mistake is one line on stderr and exit status 2, no traceback;
a run that diverged (NaN or infinite loss) is one line and exit status 3; a checkpoint or export that could not
be written (a full disk) is one line and exit status 1."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import yaml

from flexretrofit.data.corpus import DataError
from flexretrofit.run_lock import OutputDirBusy
from flexretrofit.training.checkpointing import CheckpointWriteError
from flexretrofit.training.config import ConfigError
from flexretrofit.training.trainer import TrainingDiverged

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    FileNotFoundError,
    yaml.YAMLError,
    OutputDirBusy,
)
DEBUG_ENV = "FLEXRETROFIT_TRACEBACK"


def run_recipe(
    main: Callable[[list[str] | None], object],
    argv: list[str] | None = None,
    user_errors: Sequence[type[BaseException]] = USER_ERRORS,
) -> int:
    """Call ``main(argv)``; return 0, or 2 after printing ``error: <message>`` for a mistake in ``user_errors``.

    Under a multi-process launch only rank 0 prints (every rank reads the same config and fails alike). Set
    ``FLEXRETROFIT_TRACEBACK=1`` to get the full traceback instead.

    Usage at the bottom of a recipe: ``raise SystemExit(run_recipe(main))``.
    """
    try:
        main(argv)
    except tuple(user_errors) as error:
        return _one_line(error, 2)
    except TrainingDiverged as error:
        return _one_line(error, 3)
    except CheckpointWriteError as error:
        return _one_line(error, 1)
    return 0


def _one_line(error: BaseException, status: int) -> int:
    if os.environ.get(DEBUG_ENV):
        raise error
    if os.environ.get("RANK", "0") == "0":
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
    return status
