"""Evaluation: GSM8K and HumanEval infilling, sandboxed code execution, resumable results
and length statistics.

Scoring, results and statistics take any generator callable (:mod:`.runner`) and import no model;
:mod:`.generators` adapts the samplers to that callable, and :mod:`.harness` / :mod:`.cli` run a benchmark
end to end (sharded, resumable, with summary and plot) for the ``eval/`` entry points.

The maze task lives in its own package, :mod:`flexretrofit.maze` (instances, checker, evaluation, report
and the demo run).
"""

from flexretrofit.evaluation.gsm8k import (
    GSM8KExample,
    accuracy_summary,
    build_gsm8k_few_shot_prompt,
    build_gsm8k_prompt,
    extract_answer,
    is_correct,
    load_gsm8k,
    parse_ground_truth,
    wilson_interval,
)
from flexretrofit.evaluation.humaneval_infill import (
    INFILL_VARIANTS,
    InfillTask,
    check_completion,
    load_infill_tasks,
    score_completions,
    summarize_pass_at_k,
)
from flexretrofit.evaluation.lengths import (
    LengthStats,
    length_histogram,
    length_stats,
    plot_length_distributions,
    total_variation_distance,
)
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

__all__ = [
    "GSM8KExample",
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
