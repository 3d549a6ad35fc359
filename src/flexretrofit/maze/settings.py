"""The maze demo's settings (``recipes/configs/demo/maze.yaml``): the task, the pretraining, the comparison, the
evaluation and the quick run, read and checked before anything runs (one line naming the key when a value
cannot be right).

Paths in the settings are relative to the repository root: ``root``, by default :data:`REPO_ROOT` (the
checkout this src-layout package is installed from, as ``make install`` does).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from flexretrofit.maze.instances import MazeDifficulty

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO_ROOT / "recipes" / "configs" / "demo" / "maze.yaml"


def repo_path(path: str | os.PathLike, root: Path = REPO_ROOT) -> Path:
    """Config paths are relative to the repository root (not the current directory)."""
    path = Path(path)
    return path if path.is_absolute() else root / path


# ---------------------------------------------------------------------------------------------
# Settings (recipes/configs/demo/maze.yaml)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskSettings:
    difficulties: dict[str, dict[str, int]]
    difficulty_mix: dict[str, float] | None = None
    seed: int = 0
    num_train: int = 12000
    num_validation: int = 300
    num_test: int = 600
    answer_format: str = "moves"  # or "cells" (maze.instances.ANSWER_FORMATS)
    hint_rate: float | None = None  # subgoal mazes: chance that a path cell is given (cells format)
    hint_stride: int | None = None  # calibration only: every k-th path cell given instead (regular places)

    def specs(self) -> dict[str, MazeDifficulty]:
        return {name: MazeDifficulty(name, **fields) for name, fields in self.difficulties.items()}


@dataclasses.dataclass
class PretrainSettings:
    config: str
    backbone: dict[str, int]
    seed: int = 0
    output_dir: str = "src/flexretrofit/assets/maze_mdm"


@dataclasses.dataclass
class CompareSettings:
    flexmdm_config: str
    mdm_config: str | None = (
        None  # None: the MDM baseline is the checkpoint as pretrained (no extra training)
    )
    mdm_checkpoint: str | None = None


@dataclasses.dataclass
class EvalSettings:
    num_test_per_difficulty: int = 100
    split: str = "test"  # "validation" to choose settings without looking at the test mazes
    batch_size: int = 50
    flexmdm: dict[str, Any] = dataclasses.field(default_factory=dict)  # sampler options per method
    mdm: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_samples_shown: int = 4


@dataclasses.dataclass
class QuickSettings:
    train_steps: int = 2
    num_train: int = 256
    num_test_per_difficulty: int = 3
    flexmdm_steps: int = 6


@dataclasses.dataclass
class DemoSettings:
    task: TaskSettings
    pretrain: PretrainSettings
    compare: CompareSettings
    evaluation: EvalSettings
    quick: QuickSettings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys of earlier demo configs (and of the settings.json of runs made with them): the method's old spelling.
OLD_KEYS = {"evaluation": {"flex": "flexmdm"}, "quick": {"flex_steps": "flexmdm_steps"}}


def with_current_keys(section_name: str, section: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``section`` with its old keys (:data:`OLD_KEYS`) renamed; ValueError when a key is given both ways."""
    renamed = dict(section)
    for old, new in OLD_KEYS.get(section_name, {}).items():
        if old in renamed:
            if new in renamed:
                raise ValueError(
                    f"{where}{section_name}.{old} is the old name of {section_name}.{new}; keep only {new}."
                )
            renamed[new] = renamed.pop(old)
    return renamed


def load_settings(path: str | os.PathLike = DEFAULT_CONFIG) -> DemoSettings:
    """Read the demo settings; unknown keys raise ValueError naming the allowed ones."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo config {path} does not exist; pass --config recipes/configs/demo/maze.yaml"
        )
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a demo config is a mapping of sections (task, pretrain, ...), not a list.")
    kinds = {
        "task": TaskSettings,
        "pretrain": PretrainSettings,
        "compare": CompareSettings,
        "evaluation": EvalSettings,
        "quick": QuickSettings,
    }
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; allowed: {', '.join(kinds)}.")
    built = {}
    for name, cls in kinds.items():
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: section {name} must be a mapping of keys, got {section!r}.")
        section = with_current_keys(name, section, f"{path}: ")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        extra = sorted(set(section) - set(fields))
        if extra:
            raise ValueError(
                f"{path}: unknown key(s) {extra} in {name}; allowed: {', '.join(sorted(fields))}."
            )
        missing = sorted(
            f.name
            for f in fields.values()
            if f.name not in section
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"{path}: section {name} needs {', '.join(missing)}.")
        for key, value in section.items():
            _check_setting(path, name, key, value)  # its messages say the range too
            _check_type(path, name, key, value, fields[key].type)
        built[name] = cls(**section)
    return DemoSettings(**built)


# Settings that count something: a negative or fractional count would silently change what runs.
_COUNTS = {
    "num_train": 0,
    "num_validation": 0,
    "num_test": 1,
    "seed": 0,
    "num_test_per_difficulty": 1,
    "batch_size": 1,
    "num_samples_shown": 0,
    "train_steps": 1,
    "flexmdm_steps": 1,
    "hint_stride": 1,
}


# The types the settings' annotations name (strings under `from __future__ import annotations`).
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "None": (type(None),), "dict": (dict,)}
_NAMES = {"str": "text", "int": "a whole number", "float": "a number", "None": "null", "dict": "a mapping"}
_DIFFICULTY_KEYS = ("height", "width", "min_moves", "max_moves")


def _check_type(path: Path, section: str, key: str, value: Any, annotation: Any) -> None:
    """A value of the annotated type (``str | None``, ``dict[str, int]`` ...), else one line naming the key;
    a difficulty is a mapping of exactly its four whole numbers."""
    where = f"{path}: {section}.{key}"
    options = [part.strip().split("[")[0] for part in str(annotation).split("|")]
    allowed = tuple(t for option in options for t in _TYPES.get(option, (object,)))
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        expected = " or ".join(_NAMES.get(option, option) for option in options)
        raise ValueError(f"{where} must be {expected}, got {value!r}.")
    if key == "difficulties" and isinstance(value, dict):
        for name, fields in value.items():
            if not isinstance(fields, dict):
                raise ValueError(
                    f"{where}.{name} must be a mapping of {', '.join(_DIFFICULTY_KEYS)}, got {fields!r}."
                )
            missing = [k for k in _DIFFICULTY_KEYS if k not in fields]
            unknown = sorted(set(fields) - set(_DIFFICULTY_KEYS))
            if missing or unknown:
                problem = f"needs {', '.join(missing)}" if missing else f"has unknown key(s) {unknown}"
                raise ValueError(
                    f"{where}.{name} {problem}; a difficulty sets {', '.join(_DIFFICULTY_KEYS)}."
                )
            for field_name, number in fields.items():
                if isinstance(number, bool) or not isinstance(number, int):
                    raise ValueError(f"{where}.{name}.{field_name} must be a whole number, got {number!r}.")


def _check_setting(path: Path, section: str, key: str, value: Any) -> None:
    """One line naming the key when a value cannot be right (before anything runs)."""
    where = f"{path}: {section}.{key}"
    if key in _COUNTS and not (key == "hint_stride" and value is None):
        if isinstance(value, bool) or not isinstance(value, int) or value < _COUNTS[key]:
            raise ValueError(f"{where} must be an integer >= {_COUNTS[key]}, got {value!r}.")
    elif key == "hint_rate" and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{where} must be a number in [0, 1] (or null for plain mazes), got {value!r}.")
    elif key in ("difficulties", "difficulty_mix", "backbone", "flexmdm", "mdm") and value is not None:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}.")


def quick_task(settings: DemoSettings, quick: bool) -> TaskSettings:
    return dataclasses.replace(settings.task, num_train=settings.quick.num_train) if quick else settings.task


def quick_overrides(settings: DemoSettings) -> list[str]:
    return [f"train.max_steps={settings.quick.train_steps}", "train.save_every=null", "eval.num_samples=8"]
