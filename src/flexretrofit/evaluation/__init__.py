"""Evaluation: GSM8K and HumanEval infilling, sandboxed code execution, resumable results and statistics.

One folder a concept:

- :mod:`.tasks`: each task (:mod:`.tasks.gsm8k`, :mod:`.tasks.humaneval_infill`) owns its loading, prompts,
  options, sampler settings and scoring behind one interface, :class:`~.tasks.Task` (table: ``TASKS``);
- :mod:`.sandbox`: judging untrusted programs (standard library only);
- the run framework: :mod:`.harness` (sharded, resumable runs of a task, summary and plot), :mod:`.runner`
  (any generator callable, resumably), :mod:`.results` (JSONL rows and summaries), :mod:`.generators`
  (the samplers as generators, looked up in the sampling table by method);
- :mod:`.stats` (Wilson interval, length histograms and TV distance, pass@k) and :mod:`.lengths`
  (length statistics and their plot);
- the command line of the ``eval/`` entry points: :mod:`.cli` and its options, :mod:`.settings`.

Scoring, results and statistics take any generator callable and import no model. The maze task lives in
its own package, :mod:`flexretrofit.maze` (instances, checker, evaluation, report and the demo run).
"""

from flexretrofit.evaluation.lengths import LengthStats, length_stats, plot_length_distributions
from flexretrofit.evaluation.results import ResultsWriter, read_results, write_summary
from flexretrofit.evaluation.runner import Generation, run_resumable
from flexretrofit.evaluation.sandbox import (
    SandboxConfig,
    SandboxResult,
    TestProgram,
    probe_isolation,
    run_many,
    run_program,
    run_tests,
)
from flexretrofit.evaluation.stats import (
    length_histogram,
    summarize_pass_at_k,
    total_variation_distance,
    wilson_interval,
)
from flexretrofit.evaluation.tasks import TASKS, GSM8KTask, HumanEvalInfillTask, Task
from flexretrofit.evaluation.tasks.gsm8k import (
    GSM8KExample,
    accuracy_summary,
    build_gsm8k_few_shot_prompt,
    build_gsm8k_prompt,
    extract_answer,
    is_correct,
    load_gsm8k,
    parse_ground_truth,
)
from flexretrofit.evaluation.tasks.humaneval_infill import (
    INFILL_VARIANTS,
    InfillTask,
    check_completion,
    load_infill_tasks,
    score_completions,
)

__all__ = [
    "TASKS",
    "GSM8KExample",
    "GSM8KTask",
    "HumanEvalInfillTask",
    "Task",
    "INFILL_VARIANTS",
    "Generation",
    "InfillTask",
    "LengthStats",
    "ResultsWriter",
    "SandboxConfig",
    "SandboxResult",
    "TestProgram",
    "accuracy_summary",
    "build_gsm8k_few_shot_prompt",
    "build_gsm8k_prompt",
    "check_completion",
    "extract_answer",
    "is_correct",
    "length_histogram",
    "length_stats",
    "load_gsm8k",
    "load_infill_tasks",
    "parse_ground_truth",
    "plot_length_distributions",
    "probe_isolation",
    "read_results",
    "run_many",
    "run_program",
    "run_tests",
    "run_resumable",
    "score_completions",
    "summarize_pass_at_k",
    "total_variation_distance",
    "wilson_interval",
    "write_summary",
]
