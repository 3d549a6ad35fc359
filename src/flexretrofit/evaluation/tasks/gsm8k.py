"""The GSM8K task: loading, the published 0-shot prompt, answer extraction, exact-match accuracy, and
:class:`GSM8KTask` (its settings, prompts in the training layout and scoring) for the harness.

Protocol (method doc, sections 6 and 8): the user turn is the instruction below followed by the
question, the assistant turn is prefilled with ``<reasoning>``; the answer is read from the
generated text only: the first ``\\boxed{...}`` holding a number, else the last number inside
``<answer>...</answer>``, else the last number anywhere. The reference is the number after
``####`` in the dataset's answer. Numbers are compared exactly as fractions (``18.00 == 18``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from flexretrofit.data.formats import (
    GSM8K_SYSTEM_PROMPT,
    REASONING_PREFILL,
    GSM8KFormat,
    gsm8k_target,
    parse_gsm8k_answer,
)
from flexretrofit.evaluation.jsonl import InputFileError, read_jsonl, require_fields
from flexretrofit.evaluation.runner import Generation, PromptIds
from flexretrofit.evaluation.stats import wilson_interval
from flexretrofit.evaluation.tasks.base import EvalConfigError, EvalItem, MethodSettings, Option, Task, encode
from flexretrofit.sampling.text import truncate_at_stop

# The published instruction (d1 / FlexMDM GSM8K setup), reproduced exactly because the
# instruction-tuned model was trained with it; the space before "\n" is part of it.
# One source for the prompt layout: the instruction-tuning format in flexretrofit.data.formats.
GSM8K_INSTRUCTION = GSM8K_SYSTEM_PROMPT
ASSISTANT_PREFILL = REASONING_PREFILL
HUB_DATASET = ("openai/gsm8k", "main")
HUB = "hub"  # the ``path`` (and ``--data``) that means "load HUB_DATASET through datasets"
# The test split, shipped byte for byte with its license (data/gsm8k/README.md): evaluation works offline.
SHIPPED_TEST_SPLIT = Path(__file__).parents[1] / "data" / "gsm8k" / "test.jsonl"

# Written for this project (not GSM8K problems), in the trained answer format.
FEW_SHOT_EXAMPLES = (
    (
        "A baker bakes 24 muffins and packs them in boxes of 6. She sells each box for $5. "
        "How many dollars does she earn if she sells every box?",
        "24 muffins in boxes of 6 make 24 / 6 = 4 boxes. 4 boxes at $5 each earn 4 * 5 = 20 dollars.",
        "20",
    ),
    (
        "Tom has 15 marbles. He gives 4 to his sister, then buys twice as many as he has left. "
        "How many marbles does Tom have now?",
        "After giving 4 away Tom has 15 - 4 = 11. He buys 2 * 11 = 22 more, so he has 11 + 22 = 33.",
        "33",
    ),
    (
        "A cyclist rides at 12 miles per hour for 2.5 hours. How many miles does she ride?",
        "Distance is speed times time: 12 * 2.5 = 30 miles.",
        "30",
    ),
)
FEW_SHOT_STOP = "\nQuestion:"
GSM8K_PROMPT_STYLES = ("chat", "few_shot")
HUB_GSM8K_FAILED = (
    "--data hub loads {dataset} from the hub, and that failed: {reason}. Without --data the shipped test "
    "split is used (offline); or pass a local JSONL file with 'question' and 'answer' per line: --data path.jsonl."
)

_NUMBER = re.compile(
    r"(?P<sign>(?<![\w.)\]}])[-−](?=\\?\$?\.?\d))?"  # a minus sign, not the minus of "10-3" or "10 - 3"
    r"\\?\$?\s?"  # optional (escaped) dollar sign
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_FRACTION = re.compile(r"^(-?)\\d?frac\{(-?[\d.,]+)\}\{(-?[\d.,]+)\}$|^(-?[\d.,]+)/(-?[\d.,]+)$")
_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


@dataclass(frozen=True)
class GSM8KExample:
    id: str
    question: str
    answer: str  # the dataset's full answer: rationale, then "#### N"
    ground_truth: str  # N with commas removed


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def load_gsm8k(path: str | os.PathLike | None = None, split: str = "test") -> list[GSM8KExample]:
    """GSM8K examples: ``path=None`` reads the shipped test split (:data:`SHIPPED_TEST_SPLIT`, offline),
    a path reads that local JSONL (``question``, ``answer`` per line), and ``path="hub"`` loads
    ``split`` of the hub dataset ``openai/gsm8k`` (config ``main``) through ``datasets``.

    Every record is checked here, before anything is generated: both fields present and strings, and
    the reference after ``####`` a number (an example that could never be scored fails now, not after
    a batch was generated).

    Raises:
        ValueError: ``path=None`` with a split other than ``test`` (only the test split ships).
        FileNotFoundError: no file at ``path``.
        InputFileError: a record that cannot be used; the message names the file and its line.
        RuntimeError: ``path="hub"`` and the hub dataset could not be loaded.
    """
    if path is None:
        if split != "test":
            raise ValueError(
                f"only GSM8K's test split ships with flexretrofit, not {split!r}; load it from the hub "
                f"(path='hub', --data hub) or pass a JSONL file"
            )
        path = SHIPPED_TEST_SPLIT
    if str(path) != HUB:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"no GSM8K file at {path}; pass a JSONL with 'question' and 'answer' per line"
            )
        numbered = read_jsonl(path)
        source, prefix = str(path), path.stem
        where = "line"
    else:
        try:
            from datasets import load_dataset

            hub_records = list(load_dataset(*HUB_DATASET, split=split))
        except Exception as error:  # offline, no hub access, missing package: all mean "use a file"
            raise RuntimeError(
                f"could not load {HUB_DATASET[0]} ({HUB_DATASET[1]}, split {split}) from the hub: "
                f"{type(error).__name__}: {error}. Use the shipped test split (path=None) or save the "
                "split as JSONL (fields 'question', 'answer') and pass its path: load_gsm8k(path='gsm8k_test.jsonl')."
            ) from error
        numbered = [(row, dict(record)) for row, record in enumerate(hub_records, start=1)]
        source, prefix = f"{HUB_DATASET[0]} ({split})", split
        where = "row"
    examples = []
    for index, (number, record) in enumerate(numbered):
        require_fields(source, number, record, ("question", "answer"), where=where)
        try:
            ground_truth = parse_ground_truth(record["answer"])
        except ValueError as error:
            raise InputFileError(
                f"{source}, {where} {number}: {str(error).rstrip('.')}; fix or remove that record"
            ) from None
        examples.append(
            GSM8KExample(
                id=str(record.get("id", f"gsm8k/{prefix}/{index}")),
                question=record["question"],
                answer=record["answer"],
                ground_truth=ground_truth,
            )
        )
    return examples


def parse_ground_truth(answer: str) -> str:
    """The number after ``####`` in a GSM8K answer, commas removed (``"... #### 1,200"`` -> ``"1200"``).

    Raises:
        ValueError: no ``####``, nothing after it, or what follows is not a number (``"#### Bob"``).
    """
    number = parse_gsm8k_answer(answer).number
    if parse_number(number) is None:
        raise ValueError(f"the reference after '####' is {number!r}, not a number")
    return number


# ------------------------------------------------------------------------------------------------
# prompts
# ------------------------------------------------------------------------------------------------
def gsm8k_messages(question: str) -> list[dict[str, str]]:
    """The user turn of the published 0-shot prompt: instruction, blank line, question."""
    return [{"role": "user", "content": f"{GSM8K_INSTRUCTION}\n\n{question}"}]


def build_gsm8k_prompt(question: str, tokenizer: Any | None = None) -> str | list[dict[str, str]]:
    """The published 0-shot prompt.

    With a ``tokenizer``: its chat template applied to the user turn with the generation prompt,
    then the ``<reasoning>`` prefill, as one string. Without: the chat messages, the last one an
    assistant message holding the prefill (render with ``continue_final_message=True``).
    """
    if tokenizer is None:
        return [*gsm8k_messages(question), {"role": "assistant", "content": ASSISTANT_PREFILL}]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template; load it with flexretrofit.load_tokenizer, or use "
            "build_gsm8k_few_shot_prompt for a base model"
        )
    # The exact prompt the instruction-tuning data used (training and evaluation share one layout).
    return GSM8KFormat(tokenizer).prompt_text(question)


def build_gsm8k_few_shot_prompt(
    question: str, examples: Sequence[tuple[str, str, str]] = FEW_SHOT_EXAMPLES
) -> str:
    """A plain-text few-shot prompt for base models (no chat template), ending in the prefill.

    ``examples``: ``(question, rationale, answer)`` triples. Cut the generation at
    :data:`FEW_SHOT_STOP` (:func:`truncate_at_stop`) before extracting the answer: a base model
    tends to go on with a new question of its own.
    """
    shots = [
        f"Question: {shot_question}\nAnswer: {ASSISTANT_PREFILL}{rationale}</reasoning>\n<answer>\\boxed{{{answer}}}</answer>"
        for shot_question, rationale, answer in examples
    ]
    return "\n\n".join([GSM8K_INSTRUCTION, *shots, f"Question: {question}\nAnswer: {ASSISTANT_PREFILL}"])


def gsm8k_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, question: str, style: str = "chat", system_prompt: str | None = None
) -> list[int]:
    """Token ids of the GSM8K prompt for ``question``.

    ``"chat"``: the instruction-tuning layout (:meth:`GSM8KFormat.prompt_ids`: chat template, user turn =
    instruction + question, assistant prefill ``<reasoning>``); ``system_prompt`` replaces the default
    instruction (use the one the model was tuned with). ``"few_shot"``: the plain-text few-shot prompt for
    base models, after the tokenizer's BOS when it has one.
    """
    if style == "chat":
        if system_prompt is None:
            return GSM8KFormat(tokenizer).prompt_ids(question)
        return GSM8KFormat(tokenizer, system_prompt=system_prompt).prompt_ids(question)
    if style == "few_shot":
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + encode(tokenizer, build_gsm8k_few_shot_prompt(question))
    raise ValueError(f"unknown GSM8K prompt style {style!r}; choose one of {GSM8K_PROMPT_STYLES}")


# ------------------------------------------------------------------------------------------------
# answers
# ------------------------------------------------------------------------------------------------
def extract_answer(generated: str) -> str | None:
    """The answer in ``generated`` (model output only, never the prompt), as a normalised number
    string (``"1000"``, ``"-3.5"``, ``"3/4"``), or None when there is none.

    Order: the first ``\\boxed{...}`` whose content holds a number (nested braces are matched;
    ``\\boxed{...}`` placeholders are skipped); else the last number inside the first
    ``<answer>...</answer>`` (an unclosed one runs to the end); else the last number in the text.
    """
    for content in _boxed_contents(generated):
        number = _number_in_boxed(content)
        if number is not None:
            return number
    block = _ANSWER_BLOCK.search(generated)
    if block:
        number = _last_number(block.group(1))
        if number is not None:
            return number
    return _last_number(generated)


def parse_number(text: str | None) -> Fraction | None:
    """An exact value for a number string: ``"1,000"``, ``"$18.50"``, ``"-3"``, ``"3/4"``,
    ``"\\frac{1}{2}"``; None when ``text`` is not a number."""
    if text is None:
        return None
    cleaned = text.strip().replace("−", "-").replace("\\$", "").replace("$", "").replace(" ", "").rstrip(".")
    fraction = _FRACTION.match(cleaned)
    if fraction:
        sign, numerator, denominator = (fraction.group(1) or "", *fraction.group(2, 3))
        if numerator is None:
            sign, numerator, denominator = "", *fraction.group(4, 5)
        top, bottom = _decimal(numerator), _decimal(denominator)
        if top is None or bottom is None or bottom == 0:
            return None
        value = Fraction(top) / Fraction(bottom)
        return -value if sign else value
    value = _decimal(cleaned)
    return None if value is None else Fraction(value)


def is_correct(predicted: str | None, ground_truth: str) -> bool:
    """Exact numeric match after normalisation (``"18.0"`` matches ``"18"``; no tolerance)."""
    predicted_value, true_value = parse_number(predicted), parse_number(ground_truth)
    if true_value is None:
        raise ValueError(f"ground truth {ground_truth!r} is not a number")
    return predicted_value is not None and predicted_value == true_value


def accuracy_summary(correct: Sequence[bool]) -> dict[str, Any]:
    """``{"accuracy", "correct", "total", "ci95": [low, high]}`` for a list of per-example outcomes."""
    hits, total = sum(bool(value) for value in correct), len(correct)
    low, high = wilson_interval(hits, total)
    return {"accuracy": hits / total, "correct": hits, "total": total, "ci95": [low, high]}


# ------------------------------------------------------------------------------------------------
def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, braces balanced; an unclosed one runs to the end."""
    contents = []
    for match in _BOXED.finditer(text):
        depth, position = 1, match.end()
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        contents.append(text[match.end() : position - 1 if depth == 0 else position])
    return contents


def _number_in_boxed(content: str) -> str | None:
    content = content.strip()
    # \text{...}, \mathrm{...}: units; "x = 7": the value after the last "=".
    content = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}", " ", content)
    content = content.rsplit("=", 1)[-1].replace("\\!", "").replace("\\,", "").replace("\\%", "%").strip()
    whole = parse_number(content)
    if whole is not None:
        return _format(whole)
    fraction = re.search(r"-?\\d?frac\{[^{}]+\}\{[^{}]+\}", content)
    if fraction:
        value = parse_number(fraction.group(0))
        if value is not None:
            return _format(value)
    match = _NUMBER.search(content)
    return _format_match(match) if match else None


def _last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    return _format_match(matches[-1]) if matches else None


def _format_match(match: re.Match) -> str | None:
    value = parse_number(("-" if match.group("sign") else "") + match.group("digits"))
    return None if value is None else _format(value)


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    if Fraction(decimal) == value:  # terminating decimal: "3.5", not "7/2"
        return format(decimal.normalize(), "f")
    return f"{value.numerator}/{value.denominator}"


def _decimal(text: str) -> Decimal | None:
    if not re.fullmatch(r"-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)", text):
        return None  # commas only as thousands separators: "1,000", not "1,2"
    cleaned = text.replace(",", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


# ------------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------------
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


# The published choices of confidence and window of the flexible-length sampler (method doc, section 7).
_PUBLISHED_FLEXMDM = {"confidence": "prob_diff", "sliding_window": False}


class GSM8KTask(Task):
    """GSM8K exact-match accuracy (method doc, section 8) on prompts in the training layout.

    ``reference_tokens``: tokens of the trained target (rationale + ``</reasoning>`` + boxed answer).
    """

    name = "gsm8k"
    title = "GSM8K accuracy"
    infilling = False
    reference_label = "reference target"
    options = (
        Option(
            "data",
            None,
            "GSM8K JSONL ('question', 'answer' per line), or 'hub' for openai/gsm8k through datasets; "
            "default: the shipped test split (offline)",
        ),
        Option("split", "test", "split of --data hub (only the test split ships)"),
        Option(
            "prompt_style",
            "chat",
            "chat: the instruction-tuning prompt; few_shot: plain text for base models",
            choices=GSM8K_PROMPT_STYLES,
        ),
        Option(
            "system_prompt",
            None,
            "chat style: the instruction the model was tuned with (default: flexretrofit's GSM8K instruction)",
        ),
    )
    # Without a preset: the published choices of confidence and window, few steps.
    generation_defaults: MethodSettings = {
        "flexmdm": {"steps": 64, **_PUBLISHED_FLEXMDM},
        "mdm": {"steps": 64, "gen_length": 128, "block_length": 32},
    }
    # Method doc, section 7, for FlexMDM. The MDM row is our choice (the doc gives none): LLaDA's usual
    # GSM8K setting (256 tokens, blocks of 32, one token per step).
    presets: dict[str, MethodSettings] = {
        "published": {
            "flexmdm": {"steps": 256, **_PUBLISHED_FLEXMDM},
            "mdm": {"steps": 256, "gen_length": 256, "block_length": 32},
        }
    }

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
            prompt_ids = gsm8k_prompt_ids(tokenizer, example.question, prompt_style, system_prompt)
            self.items.append(
                EvalItem(
                    id=example.id,
                    index=index,
                    prompt=PromptIds(tuple(prompt_ids), seed=seed + index),
                    reference_tokens=len(encode(tokenizer, target)),
                )
            )

    @classmethod
    def load(cls, settings: Mapping[str, Any]) -> list[GSM8KExample]:
        examples = load_gsm8k_examples(settings["data"], settings["split"])
        if not examples:
            raise EvalConfigError(
                f"{settings['data'] or 'the GSM8K split'} holds no examples; pass a JSONL file"
            )
        return examples if settings["limit"] is None else examples[: settings["limit"]]

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, examples: Sequence[GSM8KExample]
    ) -> GSM8KTask:
        return cls(
            examples,
            tokenizer,
            prompt_style=settings["prompt_style"],
            system_prompt=settings["system_prompt"],
            seed=settings["seed"],
        )

    def _row(self, item: EvalItem, generation: Generation) -> dict[str, Any]:
        example = self.examples[item.index]
        text = generation.text
        if self.prompt_style == "few_shot":  # a base model goes on with a question of its own
            text = truncate_at_stop(text, (FEW_SHOT_STOP,))
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
