"""Instruction-tuning sample formats: GSM8K, code infilling, prompt/completion, and LLaDA's fixed canvas.

A format turns one raw example into a sample ``{"input_ids": list[int], "prompt_mask": list[bool]}``
(``prompt_mask`` True at protected tokens: never deleted, never masked) or ``None`` when the example
cannot be used (too long, no span to infill). Prompt and target are tokenised separately and their
ids concatenated, so no BPE merge crosses the prompt/target border and the prompt ids are exactly
the ids the sampler will start from (method doc, section 6). FlexMDM targets carry no EOS: the
insertion head models the length. :func:`format_dataset` applies a format to a whole dataset.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
from transformers import PreTrainedTokenizerBase

from flexretrofit.data.corpus import DataError
from flexretrofit.utils import derive_seed

Sample = dict[str, list]
SampleFormat = Callable[[Mapping[str, Any]], Sample | None]

# The published GSM8K setting (d1 / FlexMDM): the model answers inside <reasoning> / <answer> tags.
# Our own wording of the section-6 instruction (reasoning block, then a boxed number).
GSM8K_SYSTEM_PROMPT = (
    "Solve the math problem below. Work through it step by step, then state the final number.\n"
    "Use this layout:\n"
    "<reasoning>\nstep-by-step working\n</reasoning>\n<answer>\n\\boxed{final number}\n</answer>"
)
REASONING_PREFILL = "<reasoning>"
BOUNDARY_TOKEN = "<|boundary|>"
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def _join(prompt_ids: Sequence[int], target_ids: Sequence[int]) -> Sample:
    return {
        "input_ids": [*prompt_ids, *target_ids],
        "prompt_mask": [True] * len(prompt_ids) + [False] * len(target_ids),
    }


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user_content: str, assistant_prefill: str = "") -> str:
    """The tokenizer's chat template for one user turn, the assistant header, and ``assistant_prefill``."""
    if tokenizer.chat_template is None:
        raise ValueError(
            "the tokenizer has no chat template; load it with flexretrofit.load_tokenizer (which sets one) "
            "or pass use_chat_template=False."
        )
    messages = [{"role": "user", "content": user_content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text + assistant_prefill


# ---------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GSM8KAnswer:
    """A GSM8K reference answer split into its rationale (calculator annotations removed) and number."""

    rationale: str
    number: str


def parse_gsm8k_answer(answer: str) -> GSM8KAnswer:
    """Split a GSM8K ``answer`` field: the rationale before ``####`` without ``<<48/2=24>>`` calculator
    annotations, and the number after it with thousands separators removed (``"1,000"`` -> ``"1000"``)."""
    if "####" not in answer:
        raise ValueError(f"a GSM8K answer ends with '#### <number>'; got {answer[-80:]!r}.")
    rationale, number = answer.rsplit("####", 1)
    rationale = _CALCULATOR_ANNOTATION.sub("", rationale).strip()
    number = number.strip().replace(",", "")
    if not number:
        raise ValueError(f"GSM8K answer has no number after '####': {answer[-80:]!r}.")
    return GSM8KAnswer(rationale=rationale, number=number)


def gsm8k_target(rationale: str, number: str) -> str:
    """The trained continuation after the ``<reasoning>`` prefill (no EOS)."""
    return f"{rationale}</reasoning>\n<answer>\\boxed{{{number}}}</answer>"


class GSM8KFormat:
    """GSM8K instruction tuning (method doc, section 6).

    prompt = chat template(user = ``system_prompt`` + question) + assistant header + ``<reasoning>``;
    target = rationale + ``</reasoning>\\n<answer>\\boxed{N}</answer>``, no EOS.
    Examples longer than ``max_length`` tokens are dropped (``None``), never truncated.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        system_prompt: str = GSM8K_SYSTEM_PROMPT,
        max_length: int | None = None,
        question_field: str = "question",
        answer_field: str = "answer",
    ):
        _check_max_length(max_length)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.question_field = question_field
        self.answer_field = answer_field

    def prompt_text(self, question: str) -> str:
        """The prompt string for ``question``, as the sampler and the evaluation must use it."""
        content = f"{self.system_prompt}\n\n{question.strip()}" if self.system_prompt else question.strip()
        return chat_prompt(self.tokenizer, content, REASONING_PREFILL)

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of :meth:`prompt_text` (the chat template already holds BOS)."""
        return _encode(self.tokenizer, self.prompt_text(question))

    @property
    def required_fields(self) -> tuple[str, ...]:
        return (self.question_field, self.answer_field)

    def __call__(self, example: Mapping[str, Any]) -> Sample | None:
        answer = parse_gsm8k_answer(example[self.answer_field])
        sample = _join(
            self.prompt_ids(example[self.question_field]),
            _encode(self.tokenizer, gsm8k_target(answer.rationale, answer.number)),
        )
        return _fits(sample, self.max_length)


# ---------------------------------------------------------------------------------------------
# Generic prompt / completion
# ---------------------------------------------------------------------------------------------


class PromptCompletionFormat:
    """Any (prompt, completion) pair: the prompt is protected, the completion is trained.

    The completion is a string, or a list of pieces ``{"text": str, "anchor": bool}`` in order: anchored
    infilling data. Anchor pieces are protected like the prompt (never deleted, never masked: a FlexMDM
    learns to keep them in place and insert around them, as ``model.infill(segments=...)`` samples); the
    other pieces are trained. Each piece is tokenised on its own, so an anchor's ids are exactly the ids
    the sampler is given. An MDM (``add_eos``) trains on every piece alike.

    Args:
        use_chat_template: wrap the prompt as a user turn and open the assistant turn.
        add_eos: end the completion with EOS (for an MDM baseline; FlexMDM models length without one).
        max_length: drop longer examples.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        prompt_field: str = "prompt",
        completion_field: str = "completion",
        use_chat_template: bool = False,
        add_eos: bool = False,
        max_length: int | None = None,
    ):
        _check_max_length(max_length)
        if add_eos and tokenizer.eos_token_id is None:
            raise ValueError("add_eos=True but the tokenizer has no eos_token.")
        self.tokenizer = tokenizer
        self.prompt_field = prompt_field
        self.completion_field = completion_field
        self.use_chat_template = use_chat_template
        self.add_eos = add_eos
        self.max_length = max_length

    def prompt_ids(self, prompt: str) -> list[int]:
        text = chat_prompt(self.tokenizer, prompt) if self.use_chat_template else prompt
        return _encode(self.tokenizer, text)

    @property
    def required_fields(self) -> tuple[str, ...]:
        return (self.prompt_field,)  # the completion may also be a list of pieces

    def __call__(self, example: Mapping[str, Any]) -> Sample | None:
        pieces = completion_pieces(example[self.completion_field], self.completion_field)
        sample = _join(self.prompt_ids(example[self.prompt_field]), [])
        for piece in pieces:
            ids = _encode(self.tokenizer, piece["text"])
            sample["input_ids"] += ids
            sample["prompt_mask"] += [bool(piece["anchor"]) and not self.add_eos] * len(ids)
        if self.add_eos:
            sample["input_ids"].append(self.tokenizer.eos_token_id)
            sample["prompt_mask"].append(False)
        return _fits(sample, self.max_length)


def completion_pieces(completion: Any, field_name: str = "completion") -> list[dict[str, Any]]:
    """A completion as pieces ``[{"text", "anchor"}]``: a string is one trained piece; a list is checked."""
    if isinstance(completion, str):
        return [{"text": completion, "anchor": False}]
    if not isinstance(completion, list) or not all(
        isinstance(p, Mapping) and isinstance(p.get("text"), str) and isinstance(p.get("anchor"), bool)
        for p in completion
    ):
        raise ValueError(
            f"field {field_name!r} must be a string or a list of {{'text': str, 'anchor': bool}} pieces, got "
            f"{str(completion)[:80]!r}."
        )
    return list(completion)


# ---------------------------------------------------------------------------------------------
# Code infilling
# ---------------------------------------------------------------------------------------------


def resolve_boundary_token_id(
    tokenizer: PreTrainedTokenizerBase, boundary_token: str = BOUNDARY_TOKEN
) -> int:
    """The id of ``boundary_token``, which must be one token of the vocabulary."""
    token_id = tokenizer.get_vocab().get(boundary_token)
    if token_id is None:
        raise ValueError(
            f"boundary token {boundary_token!r} is not in the tokenizer's vocabulary. Pass boundary_token= a "
            f"token the vocabulary has, or add it (tokenizer.add_special_tokens({{'additional_special_tokens': "
            f"[{boundary_token!r}]}})) and resize the model's embeddings."
        )
    return token_id


def infill_layout(
    instruction_ids: Sequence[int],
    prefix_ids: Sequence[int],
    middle_ids: Sequence[int],
    suffix_ids: Sequence[int],
    boundary_id: int,
) -> Sample:
    """``instruction prefix BND middle BND suffix`` with everything but the middle protected.

    The FlexMDM keeps protected tokens present and in place, so the middle tokens are the only ones
    deleted and masked: at t = 0 the sequence is ``instruction prefix BND BND suffix`` and all the
    middle's length is the gap of the slot between the two boundary tokens. With empty ``middle_ids``
    this is the start sequence of infilling.
    """
    before = [*instruction_ids, *prefix_ids, boundary_id]
    after = [boundary_id, *suffix_ids]
    return {
        "input_ids": [*before, *middle_ids, *after],
        "prompt_mask": [True] * len(before) + [False] * len(middle_ids) + [True] * len(after),
    }


def choose_middle_span(
    code: str,
    rng: random.Random,
    unit: Literal["lines", "chars"] = "lines",
    max_span_lines: int | None = None,
) -> tuple[int, int] | None:
    """Character offsets ``(start, end)`` of a random non-blank middle span of ``code``, or None.

    ``"lines"``: a run of whole lines (newline included) starting at a non-blank line, at most
    ``max_span_lines`` long; ``"chars"``: any non-blank character range.
    """
    if not code.strip():
        return None
    if unit == "chars":
        for _ in range(8):
            start = rng.randrange(len(code))
            end = rng.randint(start + 1, len(code))
            if code[start:end].strip():
                return start, end
        return None
    if unit != "lines":
        raise ValueError(f"span unit must be 'lines' or 'chars', got {unit!r}.")
    lines = code.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    first = rng.choice([i for i, line in enumerate(lines) if line.strip()])
    last_allowed = (
        len(lines) - 1 if max_span_lines is None else min(len(lines) - 1, first + max_span_lines - 1)
    )
    last = rng.randint(first, last_allowed)
    return offsets[first], offsets[last + 1]


class CodeInfillFormat:
    """Code infilling from (instruction, code) pairs (OpenCoder opc-sft-stage2 ``educational_instruct``).

    Per example, a random middle span of the code (seeded by ``seed`` and the example's text, so the
    same example always gets the same span) is cut out and marked:
    ``instruction prefix BND middle BND suffix``, only the middle trained (see :func:`infill_layout`).
    Instruction, prefix, middle and suffix are tokenised separately, so each decodes back to its text.
    Too long examples lose the end of the suffix; when even the instruction, prefix, both markers and
    the whole middle do not fit ``max_length``, the example is dropped (``None``).

    Args:
        boundary_token: the marker token; ``<|boundary|>`` by default, must be in the vocabulary.
        span_unit: ``"lines"`` (whole lines, like HumanEval line infilling) or ``"chars"`` (random spans).
        use_chat_template: put the instruction in a user turn and the code in the assistant turn;
            otherwise the prompt is ``instruction_template.format(instruction=...)`` followed by the code.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int | None = None,
        seed: int = 0,
        boundary_token: str = BOUNDARY_TOKEN,
        span_unit: Literal["lines", "chars"] = "lines",
        max_span_lines: int | None = None,
        instruction_field: str = "instruction",
        code_field: str = "code",
        use_chat_template: bool = False,
        instruction_template: str = "{instruction}\n",
    ):
        _check_max_length(max_length)
        if span_unit not in ("lines", "chars"):
            raise ValueError(f"span_unit must be 'lines' or 'chars', got {span_unit!r}.")
        self.tokenizer = tokenizer
        self.boundary_id = resolve_boundary_token_id(tokenizer, boundary_token)
        self.max_length = max_length
        self.seed = seed
        self.span_unit = span_unit
        self.max_span_lines = max_span_lines
        self.instruction_field = instruction_field
        self.code_field = code_field
        self.use_chat_template = use_chat_template
        self.instruction_template = instruction_template

    def instruction_ids(self, instruction: str) -> list[int]:
        if self.use_chat_template:
            return _encode(self.tokenizer, chat_prompt(self.tokenizer, instruction))
        return _encode(self.tokenizer, self.instruction_template.format(instruction=instruction))

    def encode(self, instruction: str, prefix: str, middle: str, suffix: str) -> Sample | None:
        """The sample for an explicit split of the code (``middle=""`` gives the infilling start sequence),
        suffix-truncated to ``max_length``; None if the part up to the second marker does not fit."""
        instruction_ids = self.instruction_ids(instruction)
        prefix_ids, middle_ids = _encode(self.tokenizer, prefix), _encode(self.tokenizer, middle)
        suffix_ids = _encode(self.tokenizer, suffix)
        if self.max_length is not None:
            room = self.max_length - (len(instruction_ids) + len(prefix_ids) + len(middle_ids) + 2)
            if room < 0:
                return None
            suffix_ids = suffix_ids[:room]
        return infill_layout(instruction_ids, prefix_ids, middle_ids, suffix_ids, self.boundary_id)

    def split_code(self, instruction: str, code: str) -> tuple[str, str, str] | None:
        """``(prefix, middle, suffix)`` of ``code`` for this format's seed, or None if the code is blank."""
        # The span depends only on the seed and the sample's text (not on order or process).
        rng = random.Random(derive_seed(self.seed, instruction, code, bits=64, separator="\x00"))
        span = choose_middle_span(code, rng, self.span_unit, self.max_span_lines)
        if span is None:
            return None
        start, end = span
        return code[:start], code[start:end], code[end:]

    @property
    def required_fields(self) -> tuple[str, ...]:
        return (self.instruction_field, self.code_field)

    def __call__(self, example: Mapping[str, Any]) -> Sample | None:
        instruction, code = example[self.instruction_field], example[self.code_field]
        parts = self.split_code(instruction, code)
        if parts is None:
            return None
        sample = self.encode(instruction, *parts)
        if sample is None or all(sample["prompt_mask"]):
            return None  # no room for the middle, or a middle of zero tokens
        return sample


# ---------------------------------------------------------------------------------------------
# LLaDA baseline: fixed canvas
# ---------------------------------------------------------------------------------------------


def pad_to_canvas(
    sample: Mapping[str, Sequence],
    eos_token_id: int,
    *,
    total_length: int | None = None,
    response_length: int | None = None,
) -> Sample | None:
    """LLaDA's SFT layout: the response is followed by EOS tokens up to a fixed canvas.

    The EOS padding is ordinary response text: visible to attention, maskable and trained on, which is
    how an MDM learns where its answer ends. Give the canvas as the whole sequence (``total_length``)
    or as the part after the prompt (``response_length``, matching a sampler's ``gen_length``). At least
    one EOS always follows the response; samples that leave no room for it are dropped (``None``).
    The prompt must be a prefix of the sample.
    """
    if (total_length is None) == (response_length is None):
        raise ValueError("give exactly one of total_length and response_length.")
    ids, prompt_mask = list(sample["input_ids"]), [bool(p) for p in sample["prompt_mask"]]
    prompt_length = sum(prompt_mask)
    if any(prompt_mask[prompt_length:]) or not all(prompt_mask[:prompt_length]):
        raise ValueError(
            "pad_to_canvas needs the prompt to be a prefix of the sample (not an infilling layout)."
        )
    canvas = total_length if total_length is not None else prompt_length + response_length
    if canvas < 1:
        raise ValueError(f"the canvas length must be >= 1, got {canvas}.")
    if len(ids) >= canvas:
        return None
    padding = canvas - len(ids)
    return {"input_ids": ids + [eos_token_id] * padding, "prompt_mask": prompt_mask + [False] * padding}


class FixedCanvasFormat:
    """Wrap another format for the LLaDA baseline: its samples padded with EOS to a fixed canvas
    (:func:`pad_to_canvas`)."""

    def __init__(
        self,
        base: SampleFormat,
        eos_token_id: int,
        *,
        total_length: int | None = None,
        response_length: int | None = None,
    ):
        if (total_length is None) == (response_length is None):
            raise ValueError("give exactly one of total_length and response_length.")
        self.base = base
        self.eos_token_id = eos_token_id
        self.total_length = total_length
        self.response_length = response_length

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(getattr(self.base, "required_fields", ()))

    def __call__(self, example: Mapping[str, Any]) -> Sample | None:
        sample = self.base(example)
        if sample is None:
            return None
        return pad_to_canvas(
            sample, self.eos_token_id, total_length=self.total_length, response_length=self.response_length
        )


# ---------------------------------------------------------------------------------------------
# Whole datasets
# ---------------------------------------------------------------------------------------------


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 (or None for no limit), got {max_length}.")


def _fits(sample: Sample, max_length: int | None) -> Sample | None:
    return None if max_length is not None and len(sample["input_ids"]) > max_length else sample


def record_problem(sample_format: SampleFormat, example: Mapping[str, Any]) -> str | None:
    """What makes ``example`` unusable for ``sample_format`` (a field it reads missing or not text), or None."""
    for name in getattr(sample_format, "required_fields", ()):
        value = example.get(name)
        if not isinstance(value, str):
            got = "missing" if value is None else f"a {type(value).__name__}, not text"
            return (
                f"the record's {name!r} is {got}; fix the record, or name the field this data uses in "
                "data.format_kwargs"
            )
    return None


class _BatchedFormat:
    """Adapter: a per-example format as a batched ``datasets.map`` function that drops ``None``s."""

    def __init__(self, sample_format: SampleFormat, where: str = "the data"):
        self.sample_format = sample_format
        self.where = where

    def __call__(self, batch: Mapping[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "prompt_mask": [], "length": []}
        size = len(next(iter(batch.values())))
        for i in range(size):
            example = {key: values[i] for key, values in batch.items()}
            problem = record_problem(self.sample_format, example)
            if problem:  # a clear line, not a TypeError from deep inside the format
                raise DataError(f"record {indices[i] + 1} of {self.where}: {problem}.")
            sample = self.sample_format(example)
            if sample is not None:
                out["input_ids"].append(sample["input_ids"])
                out["prompt_mask"].append(sample["prompt_mask"])
                out["length"].append(len(sample["input_ids"]))
        return out


def format_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset,
    sample_format: SampleFormat,
    *,
    num_proc: int | None = None,
    map_batch_size: int = 1000,
    where: str = "the data",
) -> datasets.Dataset | datasets.IterableDataset:
    """Apply ``sample_format`` to every example; dropped examples disappear. Columns of the result:
    ``input_ids``, ``prompt_mask``, ``length``. A record without a field the format reads raises
    :class:`~flexretrofit.data.corpus.DataError` naming its number in ``where`` (a stream: when it is read)."""
    kwargs: dict[str, Any] = {"batched": True, "batch_size": map_batch_size, "with_indices": True}
    if isinstance(dataset, datasets.Dataset):
        kwargs.update(num_proc=num_proc, desc="formatting")
    columns = dataset.column_names
    if columns is None:  # a stream that has not read its schema yet: peek at one example
        columns = list(next(iter(dataset.take(1)), {}))
    return dataset.map(_BatchedFormat(sample_format, where), remove_columns=columns, **kwargs)
