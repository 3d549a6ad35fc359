import json
import math
import time

import pytest

from flexretrofit.evaluation.humaneval_infill import (
    build_infill_tasks,
    check_completion,
    evaluate_infilling,
    load_humaneval_problems,
    pass_at_k,
    score_completions,
    summarize_pass_at_k,
)
from flexretrofit.evaluation.runner import Generation
from flexretrofit.evaluation.sandbox import SandboxConfig


@pytest.fixture(scope="module")
def problems():
    return load_humaneval_problems()


@pytest.fixture(scope="module")
def single_line(problems):
    return build_infill_tasks(problems, "single_line")


def _by_problem(problems):
    return {problem["task_id"]: problem for problem in problems}


def test_bundled_problems_are_the_164_humaneval_problems(problems):
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and problems[-1]["task_id"] == "HumanEval/163"


def test_single_line_gives_exactly_1033_tasks_one_per_non_blank_line(problems, single_line):
    assert len(single_line) == 1033
    assert len({task.task_id for task in single_line}) == 1033
    assert all(
        task.canonical_middle.strip() and task.canonical_middle.count("\n") <= 1 for task in single_line
    )
    by_problem = _by_problem(problems)
    for task in single_line:
        problem = by_problem[task.problem_id]
        assert (
            task.prefix + task.canonical_middle + task.suffix
            == problem["prompt"] + problem["canonical_solution"]
        )
        assert task.prefix.startswith(problem["prompt"])
        assert task.entry_point == problem["entry_point"] and task.test == problem["test"]


def test_single_line_spot_check(single_line):
    task = next(t for t in single_line if t.task_id == "SingleLineInfilling/HumanEval/0/L3")
    assert task.canonical_middle == "                distance = abs(elem - elem2)\n"
    assert task.prefix.endswith("            if idx != idx2:\n")
    assert task.suffix.startswith("                if distance < threshold:\n")
    # Line 0 of a solution: the prefix is exactly the prompt.
    first = next(t for t in single_line if t.task_id == "SingleLineInfilling/HumanEval/0/L0")
    assert first.prefix.endswith('"""\n') and first.canonical_middle.startswith("    for idx")


def test_multi_line_reproduces_the_published_5815(problems):
    tasks = build_infill_tasks(problems, "multi_line")
    assert len(tasks) == 5815
    by_problem = _by_problem(problems)
    for task in tasks[::37]:
        problem = by_problem[task.problem_id]
        assert (
            task.prefix + task.canonical_middle + task.suffix
            == problem["prompt"] + problem["canonical_solution"]
        )
        lines = (
            task.canonical_middle.split("\n")[:-1]
            if task.canonical_middle.endswith("\n")
            else task.canonical_middle.split("\n")
        )
        assert lines[0].strip() and lines[-1].strip()  # spans start and end on non-blank lines
    assert (
        sum(
            "/L" in t.task_id and t.task_id.split("/L")[1].split("_L")[0] == t.task_id.split("_L")[1]
            for t in tasks
        )
        == 1033
    )


def test_random_span_is_seeded_gives_1640_and_changes_with_the_seed(problems):
    tasks = build_infill_tasks(problems, "random_span", seed=0)
    again = build_infill_tasks(problems, "random_span", seed=0)
    other = build_infill_tasks(problems, "random_span", seed=1)
    assert len(tasks) == 1640
    assert [t.canonical_middle for t in tasks] == [t.canonical_middle for t in again]
    assert [t.canonical_middle for t in tasks] != [t.canonical_middle for t in other]
    assert all(t.canonical_middle for t in tasks)
    # A problem's spans do not depend on the other problems in the list.
    alone = build_infill_tasks(problems[5:6], "random_span", seed=0)
    assert [t.canonical_middle for t in alone] == [
        t.canonical_middle for t in tasks if t.problem_id == "HumanEval/5"
    ]
    by_problem = _by_problem(problems)
    for task in tasks[::41]:
        problem = by_problem[task.problem_id]
        assert (
            task.prefix + task.canonical_middle + task.suffix
            == problem["prompt"] + problem["canonical_solution"]
        )


def test_unknown_kind_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="single_line"):
        build_infill_tasks([], "two_lines")
    with pytest.raises(FileNotFoundError, match="HumanEval"):
        load_humaneval_problems(tmp_path / "missing.jsonl")


def test_problems_load_from_a_plain_jsonl(tmp_path, problems):
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in problems[:2]))
    assert load_humaneval_problems(path) == problems[:2]


def test_check_completion_builds_the_program_and_optionally_restores_the_newline(single_line):
    task = single_line[3]
    program = check_completion(task, task.canonical_middle)
    assert program.startswith(task.prefix + task.canonical_middle + task.suffix)
    assert program.rstrip().endswith(f"check({task.entry_point})")
    bare = task.canonical_middle.rstrip("\n")
    assert task.prefix + bare + task.suffix in check_completion(task, bare)
    assert task.prefix + bare + "\n" + task.suffix in check_completion(task, bare, ensure_newline=True)
    assert task.prefix + task.suffix in check_completion(task, "", ensure_newline=True)  # empty stays empty


@pytest.mark.slow
def test_every_canonical_line_passes_in_the_sandbox(single_line):
    started = time.monotonic()
    results = score_completions(single_line, [t.canonical_middle for t in single_line], max_workers=2)
    elapsed = time.monotonic() - started
    failures = [
        (t.task_id, r.status, r.stderr_tail[-200:]) for t, r in zip(single_line, results) if not r.passed
    ]
    assert not failures, failures[:5]
    print(f"\n1033 canonical single-line programs: {elapsed:.1f} s, {len(single_line) / elapsed:.1f} tasks/s")


def test_empty_completion_fails_most_tasks(single_line):
    subset = single_line[::10]  # 104 tasks, deterministic
    results = score_completions(subset, [""] * len(subset), SandboxConfig(timeout_s=2.0), max_workers=2)
    passed = sum(r.passed for r in results)
    # A few lines are removable without breaking the tests (a comment, a redundant guard).
    assert passed <= len(subset) // 10, passed
    assert {r.status for r in results} <= {"passed", "failed", "timeout"}


def test_pass_at_k_matches_the_combinatorial_formula():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(20, 7, 5) == pytest.approx(1 - math.comb(13, 5) / math.comb(20, 5))
    assert pass_at_k(4, 2, 3) == 1.0  # fewer failures than k: some sample of k always passes
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_summary_averages_pass_at_k_over_tasks_and_skips_impossible_k():
    rows = [
        {"task_id": "a", "status": "passed"},
        {"task_id": "a", "status": "failed"},
        {"task_id": "b", "status": "timeout"},
        {"task_id": "b", "status": "failed"},
    ]
    summary = summarize_pass_at_k(rows, ks=(1, 2, 5))
    assert summary["pass@1"] == pytest.approx(0.25)
    assert summary["pass@2"] == pytest.approx(0.5)
    assert "pass@5" not in summary
    assert summary["statuses"] == {"passed": 1, "failed": 2, "timeout": 1}


def test_evaluate_infilling_scores_any_generator_and_resumes(tmp_path, single_line):
    tasks = single_line[:6]
    calls = []

    def generate(batch):
        calls.append(len(batch))
        # Right for even-numbered tasks, wrong for odd ones; reports token counts.
        return [
            Generation(
                t.canonical_middle if int(t.task_id.rsplit("L", 1)[1]) % 2 == 0 else "    return None\n", 7
            )
            for t in batch
        ]

    summary = evaluate_infilling(tasks, generate, tmp_path, batch_size=4)
    expected = sum(int(t.task_id.rsplit("L", 1)[1]) % 2 == 0 for t in tasks) / len(tasks)
    assert summary["pass@1"] == pytest.approx(expected)
    assert summary["num_tasks"] == 6 and summary["generated_length"]["mean"] == 7
    assert calls == [4, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["pass@1"] == pytest.approx(expected)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"{t.task_id}#0" for t in tasks]

    calls.clear()
    again = evaluate_infilling(tasks, generate, tmp_path, batch_size=4)
    assert calls == [] and again["pass@1"] == summary["pass@1"]


def test_sandbox_errors_stop_the_evaluation_instead_of_counting_as_wrong(tmp_path, single_line):
    broken = SandboxConfig(require=("no-such-layer",))
    with pytest.raises(RuntimeError, match="sandbox could not run"):
        evaluate_infilling(
            single_line[:2], lambda batch: ["x\n"] * len(batch), tmp_path, sandbox_config=broken
        )
    assert (tmp_path / "samples.jsonl").read_text() == ""
