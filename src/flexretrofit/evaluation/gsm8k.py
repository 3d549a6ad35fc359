"""Old import path of the GSM8K task: everything moved to :mod:`flexretrofit.evaluation.tasks.gsm8k`
(the Wilson interval to :mod:`flexretrofit.evaluation.stats`, ``truncate_at_stop`` to
:mod:`flexretrofit.sampling.text`)."""

from flexretrofit.evaluation.stats import wilson_interval
from flexretrofit.evaluation.tasks.gsm8k import (
    ASSISTANT_PREFILL,
    FEW_SHOT_EXAMPLES,
    FEW_SHOT_STOP,
    GSM8K_INSTRUCTION,
    HUB,
    HUB_DATASET,
    SHIPPED_TEST_SPLIT,
    GSM8KExample,
    accuracy_summary,
    build_gsm8k_few_shot_prompt,
    build_gsm8k_prompt,
    extract_answer,
    gsm8k_messages,
    is_correct,
    load_gsm8k,
    parse_ground_truth,
    parse_number,
)
from flexretrofit.sampling.text import truncate_at_stop

__all__ = [
    "ASSISTANT_PREFILL",
    "FEW_SHOT_EXAMPLES",
    "FEW_SHOT_STOP",
    "GSM8K_INSTRUCTION",
    "HUB",
    "HUB_DATASET",
    "SHIPPED_TEST_SPLIT",
    "GSM8KExample",
    "accuracy_summary",
    "build_gsm8k_few_shot_prompt",
    "build_gsm8k_prompt",
    "extract_answer",
    "gsm8k_messages",
    "is_correct",
    "load_gsm8k",
    "parse_ground_truth",
    "parse_number",
    "truncate_at_stop",
    "wilson_interval",
]
