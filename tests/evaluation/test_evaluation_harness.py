import json

import pytest

from flexretrofit.data.formats import gsm8k_target, parse_gsm8k_answer
from flexretrofit.evaluation.benchmarks import GSM8KBenchmark, InfillBenchmark
from flexretrofit.evaluation.gsm8k import GSM8KExample, parse_ground_truth
from flexretrofit.evaluation.harness import (
    PLOT_FILE,
    RUN_CONFIG_FILE,
    SAMPLES_FILE,
    SKIPPED_TOO_LONG,
    SUMMARY_FILE,
    RunConfigMismatch,
    check_results_files,
    check_run_config,
    run_benchmark,
    shard_items,
    shard_path,
)
from flexretrofit.evaluation.humaneval_infill import load_infill_tasks
from flexretrofit.evaluation.results import ResultsFileError
from flexretrofit.evaluation.runner import Generation
from flexretrofit.evaluation.sandbox import SandboxConfig
from flexretrofit.testing import build_tiny_tokenizer

# Synthetic problems written for these tests (not GSM8K problems).
PROBLEMS = [
    ("A shelf has 4 rows of 6 jars. How many jars?", "4 rows of 6 jars is 4 * 6 = <<4*6=24>>24.\n#### 24"),
    ("Mia reads 9 pages a day for 3 days. How many pages?", "9 * 3 = <<9*3=27>>27 pages.\n#### 27"),
    ("A van carries 12 boxes and drops 5. How many remain?", "12 - 5 = <<12-5=7>>7 boxes.\n#### 7"),
    ("Sam splits 40 stickers among 8 friends. How many each?", "40 / 8 = <<40/8=5>>5 each.\n#### 5"),
    ("A garden has 7 beds with 11 tulips each. How many tulips?", "7 * 11 = <<7*11=77>>77.\n#### 77"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def benchmark(tokenizer):
    examples = [
        GSM8KExample(f"syn/{i}", question, answer, parse_ground_truth(answer))
        for i, (question, answer) in enumerate(PROBLEMS)
    ]
    return GSM8KBenchmark(examples, tokenizer, seed=100)


class AnswerEveryOther:
    """Answers right for even seeds (seed = 100 + index), counts what it was asked."""

    def __init__(self, fail_after_calls=None):
        self.seen = []
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    def __call__(self, prompts):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("stopped mid-run")
        self.calls += 1
        self.seen.extend(prompt.seed for prompt in prompts)
        outputs = []
        for prompt in prompts:
            index = prompt.seed - 100
            number = parse_ground_truth(PROBLEMS[index][1]) if index % 2 == 0 else "1000"
            outputs.append(Generation(f"work</reasoning>\n<answer>\\boxed{{{number}}}</answer>", 10 + index))
        return outputs


def _rows(folder):
    return [json.loads(line) for line in (folder / SAMPLES_FILE).read_text().splitlines()]


def _without_timing(rows):
    return [{key: value for key, value in row.items() if key != "generation_s"} for row in rows]


def _stable(summary):
    return {key: value for key, value in summary.items() if key not in ("throughput", "this_run")}


def test_run_writes_rows_in_index_order_summary_and_plot(benchmark, tokenizer, tmp_path):
    summary = run_benchmark(benchmark, AnswerEveryOther(), tmp_path, batch_size=2, progress=False)
    rows = _rows(tmp_path)
    assert [row["index"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["correct"] for row in rows] == [True, False, True, False, True]
    assert summary["accuracy"] == pytest.approx(3 / 5) and summary["correct"] == 3
    assert summary["ci95"][0] < 0.6 < summary["ci95"][1]
    assert summary["generated_length"]["mean"] == pytest.approx(12.0)
    targets = [parse_gsm8k_answer(answer) for _, answer in PROBLEMS]
    reference = [
        len(tokenizer(gsm8k_target(t.rationale, t.number), add_special_tokens=False)["input_ids"])
        for t in targets
    ]
    assert summary["reference_length"]["mean"] == pytest.approx(sum(reference) / 5)
    assert summary["throughput"]["examples_per_second"] > 0
    assert json.loads((tmp_path / SUMMARY_FILE).read_text())["accuracy"] == pytest.approx(0.6)
    assert (tmp_path / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_without_lost_or_repeated_rows(benchmark, tmp_path):
    reference = run_benchmark(benchmark, AnswerEveryOther(), tmp_path / "clean", batch_size=2, progress=False)

    first = AnswerEveryOther(fail_after_calls=1)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(benchmark, first, tmp_path / "run", batch_size=2, progress=False)
    assert not (tmp_path / "run" / SUMMARY_FILE).exists()
    second = AnswerEveryOther()
    resumed = run_benchmark(benchmark, second, tmp_path / "run", batch_size=2, progress=False)

    assert sorted(first.seen + second.seen) == [100, 101, 102, 103, 104]  # each generated exactly once
    assert _without_timing(_rows(tmp_path / "run")) == _without_timing(_rows(tmp_path / "clean"))
    assert _stable(resumed) == _stable(reference)


def test_two_shards_merge_into_the_rows_of_one_process(benchmark, tmp_path):
    single = run_benchmark(benchmark, AnswerEveryOther(), tmp_path / "single", batch_size=2, progress=False)
    first = run_benchmark(
        benchmark, AnswerEveryOther(), tmp_path / "sharded", rank=0, world_size=2, progress=False
    )
    assert first is None  # shard 1 has not run: no summary yet
    second = run_benchmark(
        benchmark, AnswerEveryOther(), tmp_path / "sharded", rank=1, world_size=2, progress=False
    )
    assert sorted(p.name for p in (tmp_path / "sharded" / "shards").iterdir()) == [
        "rank000-of-002.jsonl",
        "rank001-of-002.jsonl",
    ]
    assert _without_timing(_rows(tmp_path / "sharded")) == _without_timing(_rows(tmp_path / "single"))
    assert _stable(second) == _stable(single)


def test_a_rerun_with_more_processes_skips_rows_any_shard_has(benchmark, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(benchmark, AnswerEveryOther(fail_after_calls=1), tmp_path, batch_size=2, progress=False)
    generators = [AnswerEveryOther(), AnswerEveryOther()]
    run_benchmark(benchmark, generators[0], tmp_path, rank=0, world_size=2, progress=False)
    run_benchmark(benchmark, generators[1], tmp_path, rank=1, world_size=2, progress=False)
    assert len(generators[0].seen + generators[1].seen) == 3  # 2 of 5 were done before
    assert [row["id"] for row in _rows(tmp_path)] == [f"syn/{i}" for i in range(5)]


def test_shards_take_items_by_index(benchmark):
    assert [item.index for item in shard_items(benchmark.items, 1, 2)] == [1, 3]
    with pytest.raises(ValueError):
        shard_items(benchmark.items, 2, 2)


def test_prompts_over_the_limit_are_recorded_as_wrong_without_generating(benchmark, tmp_path):
    lengths = sorted(item.prompt.num_tokens for item in benchmark.items)
    generator = AnswerEveryOther()
    summary = run_benchmark(benchmark, generator, tmp_path, max_prompt_tokens=lengths[2], progress=False)
    skipped = [row for row in _rows(tmp_path) if row["skipped"] == SKIPPED_TOO_LONG]
    fitting = [item for item in benchmark.items if item.prompt.num_tokens <= lengths[2]]
    assert len(generator.seen) == len(fitting) and len(skipped) == 5 - len(fitting)
    assert all(not row["correct"] and row["num_tokens"] is None for row in skipped)
    assert summary["skipped"][SKIPPED_TOO_LONG] == len(skipped)
    assert summary["generated_length"]["count"] == len(fitting)


def test_rows_of_other_settings_are_not_mixed_in(tmp_path):
    check_run_config(tmp_path, {"steps": 16, "sampler": "flex"})
    check_run_config(tmp_path, {"steps": 16, "sampler": "flex"})  # same settings: fine
    with pytest.raises(ValueError, match="steps: 16 -> 32"):
        check_run_config(tmp_path, {"steps": 32, "sampler": "flex"})


def test_gsm8k_rows_hold_the_extracted_answer_scored_exactly(tokenizer, tmp_path):
    examples = [
        GSM8KExample(f"e/{i}", question, answer, parse_ground_truth(answer))
        for i, (question, answer) in enumerate(
            [("Ann has 3 and buys 4. How many?", "3 + 4\n#### 7"), ("5 minus 8?", "5 - 8\n#### -3")]
        )
    ]
    texts = {0: " 3+4=7 </reasoning>\n<answer>\\boxed{7}</answer>", 1: " it is 3"}

    def generate(prompts):
        return [Generation(texts[prompt.seed], num_tokens=len(texts[prompt.seed])) for prompt in prompts]

    summary = run_benchmark(GSM8KBenchmark(examples, tokenizer), generate, tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert [row["predicted"] for row in rows] == ["7", "3"]
    assert [row["correct"] for row in rows] == [True, False]  # "3" is not "-3"
    assert [row["generation"] for row in rows] == [texts[0], texts[1]]
    assert summary["correct"] == 1 and summary["total"] == 2 and summary["no_answer"] == 0


def _first_tasks(count):
    return load_infill_tasks("single_line")[:count]


def test_infill_benchmark_refuses_a_k_above_its_samples(tokenizer):
    with pytest.raises(ValueError, match=r"1 <= k <= num_samples \(1\)"):
        InfillBenchmark(_first_tasks(1), tokenizer, num_samples=1, ks=(1, 5))


def test_infill_run_resumes_without_generating_again(tokenizer, tmp_path):
    tasks = _first_tasks(4)
    benchmark = InfillBenchmark(tasks, tokenizer, seed=0)
    calls = []

    def generate(prompts):  # right for even task positions, wrong for odd ones
        calls.append(len(prompts))
        return [
            Generation(tasks[p.seed].canonical_middle if p.seed % 2 == 0 else "    return None\n", 7)
            for p in prompts
        ]

    summary = run_benchmark(benchmark, generate, tmp_path, batch_size=3, progress=False)
    assert summary["pass@1"] == pytest.approx(0.5) and summary["generated_length"]["mean"] == 7
    assert calls == [3, 1]
    assert [row["id"] for row in _rows(tmp_path)] == [f"{t.task_id}#0" for t in tasks]
    calls.clear()
    again = run_benchmark(benchmark, generate, tmp_path, batch_size=3, progress=False)
    assert calls == [] and again["pass@1"] == summary["pass@1"]


def test_sandbox_errors_are_recorded_with_their_reason_and_the_run_goes_on(tokenizer, tmp_path):
    broken = SandboxConfig(require=("no-such-layer",))
    benchmark = InfillBenchmark(_first_tasks(2), tokenizer, sandbox_config=broken)
    summary = run_benchmark(benchmark, lambda prompts: ["x\n"] * len(prompts), tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert [row["status"] for row in rows] == ["error", "error"]
    assert all("no-such-layer" in row["reason"] for row in rows)
    assert summary["statuses"] == {"error": 2} and summary["pass@1"] == 0.0


def test_damaged_results_are_found_before_any_generation(benchmark, tmp_path):
    run_benchmark(benchmark, AnswerEveryOther(), tmp_path, progress=False)
    assert check_results_files(tmp_path) == 2 * len(PROBLEMS)  # merged file + the shard
    shard = shard_path(tmp_path, 0, 1)
    lines = shard.read_text().splitlines()
    lines[1] = lines[1][:20]
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsFileError, match=r"rank000-of-001\.jsonl, line 2 is not a JSON object"):
        check_results_files(tmp_path)
    (tmp_path / RUN_CONFIG_FILE).write_text("{not json")
    with pytest.raises(RunConfigMismatch, match="run_config.json is damaged"):
        check_results_files(tmp_path)


def test_infill_rows_are_scored_in_the_sandbox(tokenizer, tmp_path):
    tasks = _first_tasks(2)
    benchmark = InfillBenchmark(tasks, tokenizer, num_samples=2, seed=5)
    assert [item.id for item in benchmark.items] == [f"{t.task_id}#{s}" for t in tasks for s in (0, 1)]

    def generate(prompts):  # sample 0 right (the canonical middle), sample 1 wrong
        return [
            Generation(
                tasks[(p.seed - 5) // 2].canonical_middle if p.seed % 2 == 1 else "    return None\n", 3
            )
            for p in prompts
        ]

    summary = run_benchmark(benchmark, generate, tmp_path, batch_size=4, progress=False)
    rows = _rows(tmp_path)
    assert [row["status"] for row in rows] == ["passed", "failed", "passed", "failed"]
    assert [row["sample"] for row in rows] == [0, 1, 0, 1]
    assert summary["pass@1"] == pytest.approx(0.5) and summary["num_tasks"] == 2
