"""Evaluation tasks, each in one module behind one interface (:class:`~.base.Task`): its settings,
data, prompts and scoring. :data:`TASKS` maps a task's name (the entry point, ``summary.json``'s
``benchmark``) to its class; the harness and the command line know tasks only through it.

    gsm8k             GSM8KTask             exact-match accuracy, prompts in the training layout
    humaneval_infill  HumanEvalInfillTask   pass@k of middles judged in the sandbox
"""

from __future__ import annotations

from flexretrofit.evaluation.tasks.base import EvalConfigError, EvalItem, Option, Task
from flexretrofit.evaluation.tasks.gsm8k import GSM8KTask
from flexretrofit.evaluation.tasks.humaneval_infill import HumanEvalInfillTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (GSM8KTask, HumanEvalInfillTask)}


def task_class(name: str) -> type[Task]:
    """The task class named ``name``.

    Raises:
        ValueError: an unknown name (one line with the choices).
    """
    if name not in TASKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {tuple(TASKS)}")
    return TASKS[name]


__all__ = [
    "TASKS",
    "EvalConfigError",
    "EvalItem",
    "GSM8KTask",
    "HumanEvalInfillTask",
    "Option",
    "Task",
    "task_class",
]
