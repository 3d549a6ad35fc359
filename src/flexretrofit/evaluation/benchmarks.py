"""What the harness runs: a :class:`Benchmark` owns its items (tokenised prompts with per-row seeds), how
a generation is scored, and the headline metrics; :mod:`.harness` runs any benchmark, sharded and resumable.

- :class:`GSM8KBenchmark`: exact-match accuracy on prompts in the training layout;
- :class:`InfillBenchmark`: HumanEval infilling pass@k, every middle run with its tests in the sandbox.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.data.formats import gsm8k_target, parse_gsm8k_answer
from flexretrofit.evaluation.generators import (
    DEFAULT_INFILL_INSTRUCTION,
    PromptIds,
    gsm8k_prompt_ids,
    infill_prompt_ids,
)
from flexretrofit.evaluation.gsm8k import (
    FEW_SHOT_STOP,
    GSM8KExample,
    accuracy_summary,
    extract_answer,
    is_correct,
)
from flexretrofit.evaluation.humaneval_infill import InfillTask, score_completions, summarize_pass_at_k
from flexretrofit.evaluation.runner import Generation
from flexretrofit.evaluation.sandbox import SandboxConfig
from flexretrofit.sampling.text import truncate_at_stop


@dataclass(frozen=True)
class EvalItem:
    """One row to produce. ``index``: position in the benchmark's full item list (orders the merged
    rows, picks the shard); ``reference_tokens``: length of the reference answer or middle."""

    id: str
    index: int
    prompt: PromptIds
    reference_tokens: int


class Benchmark(ABC):
    """Items to generate for, and how a generation is scored and summarised."""

    name: str
    items: list[EvalItem]

    @abstractmethod
    def score(self, items: list[EvalItem], generations: list[Generation]) -> list[dict[str, Any]]:
        """One row per item (``id``, ``index`` and timing are added by the harness)."""

    @abstractmethod
    def skipped_row(self, item: EvalItem, reason: str) -> dict[str, Any]:
        """The row of an item that could not be generated for (scored as wrong)."""

    @abstractmethod
    def metrics(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Headline numbers over all rows."""


class GSM8KBenchmark(Benchmark):
    """GSM8K exact-match accuracy (method doc, section 8) on prompts in the training layout.

    ``reference_tokens``: tokens of the trained target (rationale + ``</reasoning>`` + boxed answer).
    """

    name = "gsm8k"

    def __init__(
        self,
        examples: Sequence[GSM8KExample],
        tokenizer: PreTrainedTokenizerBase,
        *,
        prompt_style: str = "chat",
        system_prompt: str | None = None,
        seed: int = 0,
    ):
        self.examples = list(examples)
        self.prompt_style = prompt_style
        self.items = []
        for index, example in enumerate(self.examples):
            reference = parse_gsm8k_answer(example.answer)
            target = gsm8k_target(reference.rationale, reference.number)
            self.items.append(
                EvalItem(
                    id=example.id,
                    index=index,
                    prompt=PromptIds(
                        tuple(gsm8k_prompt_ids(tokenizer, example.question, prompt_style, system_prompt)),
                        seed=seed + index,
                    ),
                    reference_tokens=len(tokenizer(target, add_special_tokens=False)["input_ids"]),
                )
            )

    def _row(self, item: EvalItem, generation: Generation) -> dict[str, Any]:
        example = self.examples[item.index]
        text = (
            truncate_at_stop(generation.text, (FEW_SHOT_STOP,))
            if self.prompt_style == "few_shot"
            else generation.text
        )
        predicted = extract_answer(text)
        return {
            "question": example.question,
            "ground_truth": example.ground_truth,
            "generation": generation.text,
            "predicted": predicted,
            "correct": is_correct(predicted, example.ground_truth),
            "num_tokens": generation.num_tokens,
        }

    def score(self, items: list[EvalItem], generations: list[Generation]) -> list[dict[str, Any]]:
        return [self._row(item, generation) for item, generation in zip(items, generations)]

    def skipped_row(self, item: EvalItem, reason: str) -> dict[str, Any]:
        row = self._row(item, Generation(""))
        row.update(predicted=None, correct=False, skipped=reason)
        return row

    def metrics(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        summary = accuracy_summary([row["correct"] for row in rows])
        summary["no_answer"] = sum(row["predicted"] is None for row in rows)
        return summary


class InfillBenchmark(Benchmark):
    """HumanEval infilling pass@k: each middle runs with its problem's tests in the sandbox.

    ``reference_tokens``: tokens of the canonical middle. Each task gets ``num_samples`` rows
    (``task_id#sample``), each with its own seed.
    """

    name = "humaneval_infill"

    def __init__(
        self,
        tasks: Sequence[InfillTask],
        tokenizer: PreTrainedTokenizerBase,
        *,
        num_samples: int = 1,
        ks: Sequence[int] = (1,),
        layout: str = "boundary",
        instruction: str = DEFAULT_INFILL_INSTRUCTION,
        use_chat_template: bool = False,
        sandbox_config: SandboxConfig | None = None,
        sandbox_workers: int = 2,
        ensure_newline: bool = False,
        seed: int = 0,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not ks or any(not 1 <= k <= num_samples for k in ks):
            raise ValueError(
                f"every pass@k needs 1 <= k <= num_samples ({num_samples}), got ks={list(ks)}; "
                "generate at least k samples per task"
            )
        self.tasks = list(tasks)
        self.ks = tuple(ks)
        self.sandbox_config = sandbox_config
        self.sandbox_workers = sandbox_workers
        self.ensure_newline = ensure_newline
        self._task_of: list[InfillTask] = []  # by item index
        self._sample_of: list[int] = []
        self.items = []
        for task in self.tasks:
            prefix_ids, suffix_ids = infill_prompt_ids(
                tokenizer,
                task.prefix,
                task.suffix,
                instruction=instruction,
                layout=layout,
                use_chat_template=use_chat_template,
            )
            reference = len(tokenizer(task.canonical_middle, add_special_tokens=False)["input_ids"])
            for sample in range(num_samples):
                index = len(self.items)
                self._task_of.append(task)
                self._sample_of.append(sample)
                self.items.append(
                    EvalItem(
                        id=f"{task.task_id}#{sample}",
                        index=index,
                        prompt=PromptIds(tuple(prefix_ids), tuple(suffix_ids), seed=seed + index),
                        reference_tokens=reference,
                    )
                )

    def score(self, items: list[EvalItem], generations: list[Generation]) -> list[dict[str, Any]]:
        tasks = [self._task_of[item.index] for item in items]
        results = score_completions(
            tasks,
            [g.text for g in generations],
            self.sandbox_config,
            self.sandbox_workers,
            self.ensure_newline,
        )
        # An "error" row (the sandbox or the tests could not run) is recorded with its reason like any other:
        # one program must not stop the evaluation, and the summary counts errors apart from failures.
        return [
            {
                "task_id": task.task_id,
                "sample": self._sample_of[item.index],
                "completion": generation.text,
                "num_tokens": generation.num_tokens,
                "status": result.status,
                "duration_s": round(result.duration_s, 4),
                "stderr_tail": result.stderr_tail[-500:] if result.status != "passed" else "",
                "reason": result.reason[-1000:] if result.status != "passed" else "",
            }
            for item, task, generation, result in zip(items, tasks, generations, results)
        ]

    def skipped_row(self, item: EvalItem, reason: str) -> dict[str, Any]:
        return {
            "task_id": self._task_of[item.index].task_id,
            "sample": self._sample_of[item.index],
            "completion": "",
            "num_tokens": None,
            "status": "failed",
            "duration_s": 0.0,
            "stderr_tail": "",
            "reason": "",
            "skipped": reason,
        }

    def metrics(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize_pass_at_k(rows, self.ks)
