"""The one interface of an evaluation task: :class:`Task`. The harness, the settings and the command line
know a task only through it.

A task class owns, in one module (:mod:`.gsm8k`, :mod:`.humaneval_infill`):

- its **settings**: the command-line options only it has (:attr:`Task.options`), the sampler settings it
  runs with by default and in each named preset, per method (:attr:`Task.generation_defaults`,
  :attr:`Task.presets`), and the tokens a generation must never hold (:meth:`Task.suppressed_token_ids`);
- its **data**: :meth:`Task.load` reads and checks the examples before any model is loaded;
- its **prompts**: an instance holds one :class:`EvalItem` per row to generate, tokenised prompts with
  per-row seeds (:meth:`Task.from_settings`);
- its **scoring**: :meth:`Task.score` turns generations into rows, :meth:`Task.metrics` gives the headline
  numbers of all rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.runner import Generation, PromptIds
from flexretrofit.methods import OLD_SPELLINGS, Method


class EvalConfigError(ValueError):
    """A setting, file or model the evaluation cannot run with; the message says what to do."""


def int_or_none(text: str) -> int | None:
    """An integer flag that also takes ``none`` (or ``null``): unset."""
    return None if str(text).lower() in ("none", "null") else int(text)


@dataclass(frozen=True)
class Option:
    """One setting: a flag, a YAML key and a summary field. ``scope``: ``run``, ``both`` (a sampler setting
    of either method) or a method (``flexmdm``, ``mdm``: a setting of that method's sampler; the old
    spelling ``flex`` reads as ``flexmdm``)."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = str
    choices: Sequence[Any] | None = None
    flag: bool = False  # --name / --no-name
    many: bool = False  # a list: --name a b c
    scope: str = "run"
    minimum: float | None = None  # smallest allowed value (numbers; each element of a list)
    maximum: float | None = None  # largest allowed value (numbers)
    strict: bool = False  # the value must be > minimum, not >=
    aliases: tuple[str, ...] = ()  # old names of the option, still read as flags and YAML keys
    spellings: Mapping[str, str] | None = None  # old spellings of values -> the value they mean

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", OLD_SPELLINGS.get(self.scope, self.scope))

    def read(self, text: str) -> Any:
        """A flag's value: converted by :attr:`type`, an old spelling read as the value it means."""
        value = text if self.type is None else self.type(text)
        return self.spellings.get(value, value) if self.spellings else value


def switch(name: str, default: bool, help: str, **fields: Any) -> Option:
    """A true/false setting: the flags ``--name`` / ``--no-name``, a YAML boolean."""
    return Option(name, default, help, type=None, flag=True, **fields)


@dataclass(frozen=True)
class EvalItem:
    """One row to produce. ``index``: position in the task's full item list (orders the merged rows, picks
    the shard); ``reference_tokens``: length of the reference answer or middle."""

    id: str
    index: int
    prompt: PromptIds
    reference_tokens: int


# Sampler settings per method, e.g. {"flexmdm": {"steps": 64, ...}, "mdm": {...}}.
MethodSettings = dict[Method, dict[str, Any]]


class Task(ABC):
    """An evaluation task: its settings, data, prompts and scoring (see the module docstring).

    Class attributes describe the task before anything is loaded; an instance (:meth:`from_settings`)
    holds the rows to generate (:attr:`items`).
    """

    name: ClassVar[str]
    title: ClassVar[str]  # what is measured, for --help: "GSM8K accuracy"
    infilling: ClassVar[bool]  # prompts are (prefix, suffix) pairs and the model fills the middle
    reference_label: ClassVar[str]  # what reference_tokens measures (the length plot's legend)
    options: ClassVar[tuple[Option, ...]] = ()
    generation_defaults: ClassVar[MethodSettings]
    presets: ClassVar[dict[str, MethodSettings]] = {}
    items: list[EvalItem]

    @classmethod
    @abstractmethod
    def load(cls, settings: Mapping[str, Any]) -> list[Any]:
        """The examples of a run (the first ``settings["limit"]``), every record checked.

        Raises:
            EvalConfigError: data that cannot be read or scored (one line saying what to pass).
        """

    @classmethod
    @abstractmethod
    def from_settings(
        cls, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, examples: Sequence[Any]
    ) -> Task:
        """The task over ``examples`` (from :meth:`load`) with the run's prompt settings."""

    @classmethod
    def suppressed_token_ids(
        cls, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[int]:
        """Token ids a generation must never hold, beyond those the user names (none by default)."""
        return []

    @abstractmethod
    def score(self, items: list[EvalItem], generations: list[Generation]) -> list[dict[str, Any]]:
        """One row per item (``id``, ``index`` and timing are added by the harness)."""

    @abstractmethod
    def skipped_row(self, item: EvalItem, reason: str) -> dict[str, Any]:
        """The row of an item that could not be generated for (scored as wrong)."""

    @abstractmethod
    def metrics(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Headline numbers over all rows."""


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (prompt pieces and reference lengths)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]
