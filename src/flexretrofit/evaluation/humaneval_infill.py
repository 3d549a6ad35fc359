"""HumanEval infilling: the official task files, scored in the sandbox.

The tasks are those of the published benchmark (Bavarian et al. 2022, openai/human-eval-infilling),
read from the four official ``.jsonl.gz`` files shipped byte for byte in
``flexretrofit/evaluation/data/humaneval_infilling`` (MIT License, see the README there):

============================  =================================================  =====
variant                       file                                               tasks
============================  =================================================  =====
``single_line``               HumanEval-SingleLineInfilling.jsonl.gz             1033
``multi_line``                HumanEval-MultiLineInfilling.jsonl.gz              5815
``random_span``               HumanEval-RandomSpanInfilling.jsonl.gz             1640
``random_span_light``         HumanEval-RandomSpanInfillingLight.jsonl.gz        164
============================  =================================================  =====

Each record holds ``prompt`` (the code before the gap), ``suffix`` (after it), ``canonical_solution``
(the reference middle), ``test`` and ``entry_point``; ``prompt + canonical_solution + suffix`` is the
complete HumanEval program. The model generates the middle between prefix and suffix.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from flexretrofit.evaluation.jsonl import InputFileError, read_jsonl, require_fields
from flexretrofit.evaluation.sandbox import SandboxConfig, SandboxResult, TestProgram, run_many
from flexretrofit.evaluation.stats import summarize_pass_at_k  # noqa: F401  (its old import path)

# variant -> official file name (openai/human-eval-infilling, data/).
TASK_FILES = {
    "single_line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi_line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random_span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random_span_light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
INFILL_VARIANTS = tuple(TASK_FILES)
_FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")


@dataclass(frozen=True)
class InfillTask:
    """One infilling task. The model fills ``prefix + ??? + suffix``; ``canonical_middle`` is the reference.

    From an official record: ``prefix`` = ``prompt``, ``canonical_middle`` = ``canonical_solution``,
    ``problem_id`` = the HumanEval problem (``"SingleLineInfilling/HumanEval/0/L0"`` -> ``"HumanEval/0"``).
    """

    task_id: str
    problem_id: str
    prefix: str
    suffix: str
    canonical_middle: str
    entry_point: str
    test: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def task_file(variant: str) -> Path:
    """Path of the shipped official task file of ``variant`` (one of :data:`INFILL_VARIANTS`)."""
    if variant not in TASK_FILES:
        raise ValueError(f"unknown infilling variant {variant!r}; choose one of {INFILL_VARIANTS}")
    resource = importlib.resources.files("flexretrofit.evaluation").joinpath(
        "data", "humaneval_infilling", TASK_FILES[variant]
    )
    return Path(str(resource))


def load_infill_tasks(variant: str = "single_line") -> list[InfillTask]:
    """The official tasks of ``variant``, in file order (``"single_line"``, ``"multi_line"``,
    ``"random_span"``, ``"random_span_light"``)."""
    path = task_file(variant)
    tasks = []
    for number, record in read_jsonl(path):
        require_fields(path, number, record, _FIELDS)
        parts = record["task_id"].split("/")
        if len(parts) != 4:
            raise InputFileError(
                f"{path}, line {number}: task_id {record['task_id']!r} is not 'Family/HumanEval/<n>/<span>'"
            )
        tasks.append(
            InfillTask(
                task_id=record["task_id"],
                problem_id="/".join(parts[1:3]),
                prefix=record["prompt"],
                suffix=record["suffix"],
                canonical_middle=record["canonical_solution"],
                entry_point=record["entry_point"],
                test=record["test"],
            )
        )
    return tasks


def check_completion(task: InfillTask, middle: str, ensure_newline: bool = False) -> TestProgram:
    """What the sandbox judges for ``middle``: the program ``prefix + middle + suffix`` (untrusted), and
    the task's tests with the reference program ``prefix + canonical_middle + suffix`` as their
    trusted context (some tests call its helpers, e.g. ``encode_cyclic`` or ``poly``).

    ``ensure_newline``: append ``"\\n"`` to a non-empty ``middle`` that lacks one when the
    reference middle ends in one (models often stop right before it). Off by default, as in the
    published evaluation, so a middle that runs into the suffix line fails.
    """
    if ensure_newline and middle and not middle.endswith("\n") and task.canonical_middle.endswith("\n"):
        middle += "\n"
    return TestProgram(
        program=f"{task.prefix}{middle}{task.suffix}",
        entry_point=task.entry_point,
        test=task.test,
        context=f"{task.prefix}{task.canonical_middle}{task.suffix}",
    )


def score_completions(
    tasks: Sequence[InfillTask],
    middles: Sequence[str],
    config: SandboxConfig | None = None,
    max_workers: int = 2,
    ensure_newline: bool = False,
) -> list[SandboxResult]:
    """Judge each ``(task, middle)`` pair in the sandbox; results align with ``tasks``."""
    if len(tasks) != len(middles):
        raise ValueError(f"got {len(tasks)} tasks and {len(middles)} completions; they must align")
    programs = [check_completion(task, middle, ensure_newline) for task, middle in zip(tasks, middles)]
    return run_many(programs, config, max_workers=max_workers)
