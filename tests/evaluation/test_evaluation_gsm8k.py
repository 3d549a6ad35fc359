import hashlib
import json
from fractions import Fraction

import pytest

from flexretrofit.evaluation import gsm8k
from flexretrofit.evaluation.gsm8k import (
    ASSISTANT_PREFILL,
    FEW_SHOT_EXAMPLES,
    FEW_SHOT_STOP,
    GSM8K_INSTRUCTION,
    SHIPPED_TEST_SPLIT,
    accuracy_summary,
    build_gsm8k_few_shot_prompt,
    build_gsm8k_prompt,
    extract_answer,
    is_correct,
    load_gsm8k,
    parse_ground_truth,
    parse_number,
    truncate_at_stop,
    wilson_interval,
)
from flexretrofit.evaluation.jsonl import InputFileError

# Made-up problems in the GSM8K file format (the shipped test split is checked separately below).
RECORDS = [
    {
        "question": "Ann has 3 apples and buys 4 more. How many apples?",
        "answer": "3 + 4 = <<3+4=7>>7\n#### 7",
    },
    {
        "question": "A shop sells 1,200 pens a day. How many in 2 days?",
        "answer": "1200 * 2 = 2400\n#### 2,400",
    },
    {"question": "It is 5 degrees and drops by 8. What is it now?", "answer": "5 - 8 = -3\n#### -3"},
]


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "tiny_gsm8k.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


@pytest.mark.parametrize(
    "generated, expected",
    [
        ("so the total is \\boxed{18}.", "18"),
        ("\\boxed{} and \\boxed{...} are empty; \\boxed{42}", "42"),  # first box with a number
        ("first \\boxed{12}, then I changed my mind \\boxed{13}", "12"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),  # nested braces
        ("\\boxed{{1,000}}", "1000"),
        ("\\boxed{-5}", "-5"),
        ("\\boxed{\\$18.50}", "18.5"),
        ("\\boxed{18 \\text{ dollars}}", "18"),
        ("\\boxed{x = 7}", "7"),
        ("\\boxed{10\\%}", "10"),
        ("\\boxed{2.50}", "2.5"),
        ("\\boxed{1/3}", "1/3"),
        ("unclosed \\boxed{5", "5"),
        ("I guess 5. <answer>It is 12 or maybe 13</answer> and then 99", "13"),
        ("<answer>\n\\boxed{...}\n</answer> so 8", "8"),  # placeholder box, no number in <answer>
        ("<answer> 21 cups", "21"),  # cut off before </answer>
        ("Total: $1,234.50.", "1234.5"),
        ("the change is -7.", "-7"),
        ("−4 degrees", "-4"),
        ("10 - 3", "3"),  # a binary minus is not a sign
        ("from 10-3", "3"),
        ("3,000 apples", "3000"),
        ("about .5 liters", "0.5"),
        ("it takes 12 km", "12"),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_answer_tricky_cases(generated, expected):
    assert extract_answer(generated) == expected


def test_only_the_generated_part_is_read_not_the_prompt():
    prompt = build_gsm8k_few_shot_prompt("How many?")
    assert "\\boxed{20}" in prompt and "\\boxed{final number}" in GSM8K_INSTRUCTION
    generated = " 6 and 1 more makes 7 </reasoning>\n<answer>7</answer>"
    assert extract_answer(generated) == "7"
    assert extract_answer(prompt + generated) == "20"  # why callers must never pass the prompt


def test_parse_number_and_exact_match():
    assert parse_number("1,000") == 1000
    assert parse_number("$18.50") == Fraction(37, 2)
    assert parse_number("-3") == -3
    assert parse_number("\\frac{1}{2}") == Fraction(1, 2)
    assert parse_number("18.") == 18
    assert parse_number("1,2") is None  # a comma that is not a thousands separator
    assert parse_number("abc") is None and parse_number(None) is None
    assert is_correct("18.00", "18") and is_correct("1000", "1000")
    assert not is_correct("18.01", "18") and not is_correct(None, "18")
    with pytest.raises(ValueError, match="not a number"):
        is_correct("1", "n/a")


def test_ground_truth_is_the_number_after_hashes_without_commas():
    assert parse_ground_truth("work...\n#### 1,234") == "1234"
    assert parse_ground_truth("#### -3") == "-3"
    assert parse_ground_truth("#### 2.5") == "2.5"
    with pytest.raises(ValueError, match="####"):
        parse_ground_truth("no marker")
    with pytest.raises(ValueError, match="'Bob', not a number"):
        parse_ground_truth("It is Bob.\n#### Bob")
    with pytest.raises(ValueError, match="no number after"):
        parse_ground_truth("work\n#### ")


def test_load_local_jsonl(gsm8k_file):
    examples = load_gsm8k(gsm8k_file)
    assert [e.ground_truth for e in examples] == ["7", "2400", "-3"]
    assert [e.id for e in examples] == ["gsm8k/tiny_gsm8k/0", "gsm8k/tiny_gsm8k/1", "gsm8k/tiny_gsm8k/2"]
    assert examples[1].question == RECORDS[1]["question"]


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_reference_that_is_not_a_number_fails_at_load_naming_file_and_line(tmp_path):
    lines = [json.dumps(record) for record in RECORDS]
    lines.insert(1, "")  # blank lines are skipped but still counted: the error points at the editor's line
    lines.insert(3, json.dumps({"question": "Who?", "answer": "It is Bob.\n#### Bob"}))
    path = _write_lines(tmp_path / "bob.jsonl", lines)
    with pytest.raises(InputFileError, match=r"bob\.jsonl, line 4: the reference after '####' is 'Bob'"):
        load_gsm8k(path)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"question": "q", "answer": "#### 4"', r"line 3: not valid JSON"),
        ('["question", "answer"]', r"line 3: a JSON list, not an object"),
        ('{"question": "q"}', r"line 3: no 'answer' field"),
        ('{"question": "q", "answer": 4}', r"line 3: 'answer' is int, not text"),
        ('{"question": "q", "answer": "four"}', r"line 3: a GSM8K answer ends with '#### <number>'"),
    ],
)
def test_malformed_records_are_named_by_their_line(tmp_path, bad_line, message):
    lines = [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), bad_line, json.dumps(RECORDS[2])]
    path = _write_lines(tmp_path / "data.jsonl", lines)
    with pytest.raises(InputFileError, match=message) as caught:
        load_gsm8k(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_load_errors_tell_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="question"):
        load_gsm8k(tmp_path / "missing.jsonl")
    with pytest.raises(InputFileError, match="is a folder"):
        load_gsm8k(tmp_path)

    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(RuntimeError, match=r"shipped test split \(path=None\).*load_gsm8k\(path="):
        load_gsm8k("hub")
    with pytest.raises(ValueError, match="only GSM8K's test split ships"):
        load_gsm8k(split="train")


# SHA-256 of grade_school_math/data/test.jsonl at openai/grade-school-math commit
# 3101c7d5072418e28b9008a6636bde82a006892c: the shipped copy must be those bytes.
OFFICIAL_TEST_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"


def test_the_shipped_test_split_is_the_official_file_with_its_license():
    assert hashlib.sha256(SHIPPED_TEST_SPLIT.read_bytes()).hexdigest() == OFFICIAL_TEST_SHA256
    license_text = (SHIPPED_TEST_SPLIT.parent / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2021 OpenAI" in license_text


def test_the_default_is_the_shipped_test_split_every_record_scorable(monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("the default must not touch the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    examples = load_gsm8k()
    assert len(examples) == 1319 and len({example.id for example in examples}) == 1319
    assert examples[0].id == "gsm8k/test/0" and examples[0].ground_truth == "18"
    assert examples[-1].id == "gsm8k/test/1318"


def test_zero_shot_prompt_without_tokenizer_is_messages_with_prefill():
    messages = build_gsm8k_prompt("What is 2 + 2?")
    assert messages == [
        {"role": "user", "content": GSM8K_INSTRUCTION + "\n\nWhat is 2 + 2?"},
        {"role": "assistant", "content": "<reasoning>"},
    ]


def test_zero_shot_prompt_uses_the_chat_template_and_ends_with_the_prefill():
    from flexretrofit.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    text = build_gsm8k_prompt("What is 2 + 2?", tokenizer)
    expected_head = tokenizer.apply_chat_template(
        [{"role": "user", "content": GSM8K_INSTRUCTION + "\n\nWhat is 2 + 2?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == expected_head + ASSISTANT_PREFILL
    assert (
        text.index(GSM8K_INSTRUCTION.splitlines()[0])
        < text.index("What is 2 + 2?")
        < text.rindex("<reasoning>")
    )
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        build_gsm8k_prompt("q", tokenizer)


def test_few_shot_prompt_is_self_consistent_and_stops_at_the_next_question():
    prompt = build_gsm8k_few_shot_prompt("How many legs do 3 spiders have?")
    assert prompt.endswith("Question: How many legs do 3 spiders have?\nAnswer: <reasoning>")
    assert prompt.count("Question:") == len(FEW_SHOT_EXAMPLES) + 1
    for _, rationale, answer in FEW_SHOT_EXAMPLES:
        shot = f"{rationale}</reasoning>\n<answer>\\boxed{{{answer}}}</answer>"
        assert shot in prompt and extract_answer(shot) == answer
    continued = "8 * 3 = 24 legs. The answer is 24.\nQuestion: A cat has 4 legs and 9 lives..."
    assert extract_answer(truncate_at_stop(continued, (FEW_SHOT_STOP,))) == "24"


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    summary = accuracy_summary([True, False, True, True])
    assert summary["accuracy"] == 0.75 and summary["correct"] == 3 and summary["total"] == 4
    assert summary["ci95"][0] < 0.75 < summary["ci95"][1]


def test_the_hub_dataset_is_openai_gsm8k_main():
    assert gsm8k.HUB_DATASET == ("openai/gsm8k", "main")
