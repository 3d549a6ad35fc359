"""Old import path of the HumanEval-infilling task: everything moved to
:mod:`flexretrofit.evaluation.tasks.humaneval_infill` (pass@k to :mod:`flexretrofit.evaluation.stats`)."""

from flexretrofit.evaluation.stats import summarize_pass_at_k
from flexretrofit.evaluation.tasks.humaneval_infill import (
    INFILL_VARIANTS,
    TASK_FILES,
    InfillTask,
    check_completion,
    load_infill_tasks,
    score_completions,
    task_file,
)

__all__ = [
    "INFILL_VARIANTS",
    "TASK_FILES",
    "InfillTask",
    "check_completion",
    "load_infill_tasks",
    "score_completions",
    "summarize_pass_at_k",
    "task_file",
]
