"""Instruction formats: GSM8K, code infilling, prompt/completion and the LLaDA fixed canvas."""

import datasets
import pytest

from flexretrofit.data.formats import (
    GSM8K_SYSTEM_PROMPT,
    CodeInfillFormat,
    FixedCanvasFormat,
    GSM8KFormat,
    PromptCompletionFormat,
    format_dataset,
    gsm8k_target,
    pad_to_canvas,
    parse_gsm8k_answer,
)
from flexretrofit.testing import build_tiny_tokenizer

GSM8K_EXAMPLE = {
    "question": "A ferry carries 48 cars in the morning and half as many in the evening. "
    "How many cars does it carry that day, counting 1,000 earlier ones too?",
    "answer": "In the evening it carries 48/2 = <<48/2=24>>24 cars.\n"
    "In total 1000+48+24 = <<1000+48+24=1072>>1072 cars.\n#### 1,072",
}
CODES = [
    "def add(a, b):\n    return a + b\n",
    "def fib(n):\n    if n < 2:\n        return n\n\n    return fib(n - 1) + fib(n - 2)\n",
    "for i in range(10):\n    print(i)\nwhile x > 0:\n    x -= 1\n",
    "return [x for x in xs if x % 2 == 0]",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_parse_gsm8k_answer():
    answer = parse_gsm8k_answer(GSM8K_EXAMPLE["answer"])
    assert answer.number == "1072"
    assert "<<" not in answer.rationale and ">>" not in answer.rationale
    assert answer.rationale.startswith("In the evening it carries 48/2 = 24 cars")
    assert answer.rationale.endswith("In total 1000+48+24 = 1072 cars.")
    with pytest.raises(ValueError, match="####"):
        parse_gsm8k_answer("no final number here")


def test_gsm8k_is_prompt_ids_then_target_ids_without_eos(tokenizer):
    fmt = GSM8KFormat(tokenizer)
    sample = fmt(GSM8K_EXAMPLE)
    prompt_text = fmt.prompt_text(GSM8K_EXAMPLE["question"])
    target_text = gsm8k_target(parse_gsm8k_answer(GSM8K_EXAMPLE["answer"]).rationale, "1072")
    prompt_ids, target_ids = _ids(tokenizer, prompt_text), _ids(tokenizer, target_text)

    assert sample["input_ids"] == prompt_ids + target_ids
    assert sample["prompt_mask"] == [True] * len(prompt_ids) + [False] * len(target_ids)
    assert sample["input_ids"][-1] != tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in target_ids
    # The prompt is the chat template (BOS once, user turn with the instruction) with the prefill.
    assert prompt_ids[0] == tokenizer.bos_token_id and prompt_ids.count(tokenizer.bos_token_id) == 1
    assert prompt_text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>")
    assert GSM8K_SYSTEM_PROMPT.splitlines()[0] in prompt_text and GSM8K_EXAMPLE["question"] in prompt_text
    assert tokenizer.decode(target_ids).endswith("</reasoning>\n<answer>\\boxed{1072}</answer>")


def test_gsm8k_drops_examples_over_max_length(tokenizer):
    length = len(GSM8KFormat(tokenizer)(GSM8K_EXAMPLE)["input_ids"])
    assert GSM8KFormat(tokenizer, max_length=length)(GSM8K_EXAMPLE) is not None
    assert GSM8KFormat(tokenizer, max_length=length - 1)(GSM8K_EXAMPLE) is None
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        GSM8KFormat(tokenizer, max_length=0)


def _infill_parts(tokenizer, sample, boundary_id):
    ids, mask = sample["input_ids"], sample["prompt_mask"]
    first, second = [i for i, token in enumerate(ids) if token == boundary_id]
    assert mask[first] and mask[second]
    assert mask == [True] * (first + 1) + [False] * (second - first - 1) + [True] * (len(ids) - second)
    return ids[: first + 1], ids[first + 1 : second], ids[second + 1 :]


def test_infill_keeps_prefix_and_suffix_intact(tokenizer):
    boundary_id = tokenizer.convert_tokens_to_ids("<|boundary|>")
    instruction = "Write the function."
    spans = set()
    for seed in range(4):
        fmt = CodeInfillFormat(tokenizer, seed=seed)
        for code in CODES:
            prefix, middle, suffix = fmt.split_code(instruction, code)
            assert prefix + middle + suffix == code and middle.strip()
            sample = fmt({"instruction": instruction, "code": code})
            head, middle_ids, suffix_ids = _infill_parts(tokenizer, sample, boundary_id)
            assert tokenizer.decode(head) == f"{instruction}\n{prefix}<|boundary|>"
            assert tokenizer.decode(middle_ids) == middle
            assert tokenizer.decode(suffix_ids) == suffix
            spans.add((code, prefix, middle))
    assert len(spans) > len(CODES)  # seeds pick different spans
    # The span depends on the seed and the example only: the same example gets the same sample.
    again = CodeInfillFormat(tokenizer, seed=0)({"instruction": instruction, "code": CODES[1]})
    assert again == CodeInfillFormat(tokenizer, seed=0)({"instruction": instruction, "code": CODES[1]})


def test_infill_char_spans_and_truncation(tokenizer):
    boundary_id = tokenizer.convert_tokens_to_ids("<|boundary|>")
    example = {"instruction": "Fix it.", "code": CODES[1]}
    full = CodeInfillFormat(tokenizer, span_unit="chars", seed=3)(example)
    head, middle_ids, suffix_ids = _infill_parts(tokenizer, full, boundary_id)
    fits = len(head) + len(middle_ids) + 1
    assert len(suffix_ids) > 1
    # Too long: the suffix is cut from its end, the middle stays whole.
    cut = CodeInfillFormat(tokenizer, span_unit="chars", seed=3, max_length=fits + len(suffix_ids) - 1)(
        example
    )
    assert cut["input_ids"] == full["input_ids"][: fits + len(suffix_ids) - 1]
    assert CodeInfillFormat(tokenizer, span_unit="chars", seed=3, max_length=fits)(example) is not None
    assert CodeInfillFormat(tokenizer, span_unit="chars", seed=3, max_length=fits - 1)(example) is None
    assert CodeInfillFormat(tokenizer)({"instruction": "x", "code": "   \n"}) is None


def test_infill_boundary_token_must_exist(tokenizer):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        CodeInfillFormat(tokenizer, boundary_token="<|no_such_marker|>")
    with pytest.raises(ValueError, match="span_unit"):
        CodeInfillFormat(tokenizer, span_unit="words")


def test_prompt_completion(tokenizer):
    example = {"prompt": "Say hi:", "completion": " hello there"}
    sample = PromptCompletionFormat(tokenizer)(example)
    prompt_ids, completion_ids = _ids(tokenizer, "Say hi:"), _ids(tokenizer, " hello there")
    assert sample["input_ids"] == prompt_ids + completion_ids
    assert sample["prompt_mask"] == [True] * len(prompt_ids) + [False] * len(completion_ids)
    with_eos = PromptCompletionFormat(tokenizer, add_eos=True, use_chat_template=True)(example)
    assert with_eos["input_ids"][-1] == tokenizer.eos_token_id and not with_eos["prompt_mask"][-1]
    assert with_eos["input_ids"][0] == tokenizer.bos_token_id


def test_fixed_canvas_pads_response_with_trainable_eos(tokenizer):
    eos = tokenizer.eos_token_id
    base = GSM8KFormat(tokenizer)
    sample = base(GSM8K_EXAMPLE)
    n, n_prompt = len(sample["input_ids"]), sum(sample["prompt_mask"])
    canvas = FixedCanvasFormat(base, eos, total_length=n + 7)(GSM8K_EXAMPLE)
    assert canvas["input_ids"] == sample["input_ids"] + [eos] * 7
    assert canvas["prompt_mask"] == sample["prompt_mask"] + [False] * 7
    by_response = FixedCanvasFormat(base, eos, response_length=n - n_prompt + 3)(GSM8K_EXAMPLE)
    assert len(by_response["input_ids"]) == n + 3 and by_response["input_ids"][-3:] == [eos] * 3
    assert FixedCanvasFormat(base, eos, total_length=n)(GSM8K_EXAMPLE) is None  # no room for one EOS
    with pytest.raises(ValueError, match="exactly one"):
        FixedCanvasFormat(base, eos)
    infill = {"input_ids": [5, 6, 7], "prompt_mask": [True, False, True]}
    with pytest.raises(ValueError, match="prefix"):
        pad_to_canvas(infill, eos, total_length=8)


def test_format_dataset_drops_unusable_examples(tokenizer):
    rows = {
        "question": [GSM8K_EXAMPLE["question"], "Too long? " * 200],
        "answer": [GSM8K_EXAMPLE["answer"]] * 2,
    }
    out = format_dataset(datasets.Dataset.from_dict(rows), GSM8KFormat(tokenizer, max_length=400))
    assert out.num_rows == 1 and out.column_names == ["input_ids", "prompt_mask", "length"]
    assert out[0]["length"] == len(out[0]["input_ids"])
    stream = format_dataset(
        datasets.Dataset.from_dict(rows).to_iterable_dataset(), GSM8KFormat(tokenizer, max_length=400)
    )
    assert [row["input_ids"] for row in stream] == out["input_ids"]


# ---------------------------------------------------------------------------------------------
# Anchored completions: protected spans inside the answer
# ---------------------------------------------------------------------------------------------

ANCHORED = {
    "prompt": "maze path:",
    "answer": [
        {"text": " 1 2", "anchor": False},
        {"text": " 3", "anchor": True},
        {"text": " 4", "anchor": False},
        {"text": " 5 6", "anchor": True},
    ],
}


def test_anchor_pieces_are_protected_and_tokenised_piece_by_piece(tokenizer):
    sample = PromptCompletionFormat(tokenizer, completion_field="answer")(ANCHORED)
    prompt = tokenizer("maze path:", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer(p["text"], add_special_tokens=False)["input_ids"] for p in ANCHORED["answer"]]
    assert sample["input_ids"] == prompt + [i for piece in pieces for i in piece]
    flags = [p["anchor"] for p in ANCHORED["answer"]]
    assert sample["prompt_mask"] == [True] * len(prompt) + [
        f for piece, f in zip(pieces, flags) for _ in piece
    ]


def test_an_mdm_trains_on_every_piece_alike(tokenizer):
    sample = PromptCompletionFormat(tokenizer, completion_field="answer", add_eos=True)(ANCHORED)
    prompt = tokenizer("maze path:", add_special_tokens=False)["input_ids"]
    assert sample["prompt_mask"] == [True] * len(prompt) + [False] * (len(sample["input_ids"]) - len(prompt))
    assert sample["input_ids"][-1] == tokenizer.eos_token_id


@pytest.mark.parametrize(
    "answer",
    [[{"text": " 1"}], [{"text": 3, "anchor": True}], [" 1", " 2"], 7, [{"text": " 1", "anchor": "yes"}]],
)
def test_malformed_pieces_are_refused_with_one_line(tokenizer, answer):
    with pytest.raises(ValueError, match="'text': str, 'anchor': bool") as error:
        PromptCompletionFormat(tokenizer, completion_field="answer")({"prompt": "p", "answer": answer})
    assert "\n" not in str(error.value)


def test_the_collator_never_deletes_or_masks_an_anchor(tokenizer):
    from flexretrofit.data import FlexMDMCollator

    sample = PromptCompletionFormat(tokenizer, completion_field="answer")(ANCHORED)
    ids, protected = sample["input_ids"], sample["prompt_mask"]
    kept = [token for token, flag in zip(ids, protected) if flag]
    collator = FlexMDMCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, "linear", "linear", seed=0)
    seen_gap = False
    for step in range(40):
        batch = collator.noise(collator.pad([sample] * 8), step)
        for row, length in zip(batch["xt"], batch["xt_attention_mask"].sum(dim=1)):
            row = row[: int(length)].tolist()
            assert [token for token in row if token in kept] == kept, "anchors present, unmasked, in order"
        seen_gap |= bool((batch["slot_gaps"] > 0).any())
    assert seen_gap


@pytest.mark.parametrize("streaming", [False, True])
def test_a_gsm8k_record_without_its_answer_is_one_line_naming_the_record(tokenizer, streaming):
    from flexretrofit.data import DataError

    rows = [
        {"question": "How many?", "answer": "1 + 1 = 2\n#### 2"},
        {"question": "And now?", "answer": None},
    ]
    dataset = datasets.Dataset.from_list(rows)
    if streaming:
        dataset = dataset.to_iterable_dataset()
    with pytest.raises(
        DataError, match=r"record 2 of gsm8k.jsonl: the record's 'answer' is missing"
    ) as error:
        formatted = format_dataset(dataset, GSM8KFormat(tokenizer), where="gsm8k.jsonl")
        list(formatted)  # a stream meets the record when it is read
    assert "\n" not in str(error.value)
