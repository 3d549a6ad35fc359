"""End to end on a tiny random LLaDA checkpoint: both entry points, resume, shards, settings, errors."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from flexretrofit.evaluation import cli, generators
from flexretrofit.evaluation.harness import PLOT_FILE, SAMPLES_FILE, SUMMARY_FILE
from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint

REPO = Path(__file__).resolve().parents[1]

# Synthetic problems written for this test (not GSM8K problems), in the GSM8K JSONL layout.
PROBLEMS = [
    {
        "question": "A crate holds 5 rows of 4 pears. How many pears?",
        "answer": "5 * 4 = <<5*4=20>>20.\n#### 20",
    },
    {
        "question": "Lea had 30 beads and used 12. How many are left?",
        "answer": "30 - 12 = <<30-12=18>>18.\n#### 18",
    },
    {
        "question": "A bus has 9 seats in each of 6 rows. How many seats?",
        "answer": "9 * 6 = <<9*6=54>>54.\n#### 54",
    },
    {
        "question": "Omar bakes 16 buns and packs 4 per bag. How many bags?",
        "answer": "16 / 4 = <<16/4=4>>4.\n#### 4",
    },
    {
        "question": "A pond has 13 ducks; 8 more land. How many ducks?",
        "answer": "13 + 8 = <<13+8=21>>21.\n#### 21",
    },
]


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory):
    return save_tiny_llada_checkpoint(tmp_path_factory.mktemp("llada"), tokenizer=build_tiny_tokenizer())


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("".join(json.dumps(problem) + "\n" for problem in PROBLEMS))
    return path


def _flex_gsm8k_args(llada_folder, gsm8k_file, output_dir, *extra):
    return [
        "--model", str(llada_folder), "--fresh-retrofit", "--data", str(gsm8k_file),
        "--steps", "8", "--max-length", "260", "--batch-size", "2", "--no-progress",
        "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip


def _rows(folder):
    rows = [json.loads(line) for line in (Path(folder) / SAMPLES_FILE).read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "generation_s"} for row in rows]


def _stable(summary):
    drop = ("throughput", "this_run", "settings", "environment")
    return {key: value for key, value in summary.items() if key not in drop}


@pytest.fixture(scope="module")
def clean_gsm8k_run(llada_folder, gsm8k_file, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("clean")
    summary = cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, output_dir))
    return output_dir, summary


def test_gsm8k_entry_point_writes_rows_summary_and_plot(clean_gsm8k_run):
    output_dir, summary = clean_gsm8k_run
    assert len(_rows(output_dir)) == len(PROBLEMS)
    written = json.loads((output_dir / SUMMARY_FILE).read_text())
    assert written["total"] == len(PROBLEMS) and 0 <= written["accuracy"] <= 1
    assert len(written["ci95"]) == 2
    assert (output_dir / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    # Every sampler setting is recorded, and the model is said to be a fresh retrofit.
    sampler = written["sampler"]
    assert sampler["function"] == "generate_flex"
    assert (sampler["steps"], sampler["confidence"], sampler["sliding_window"], sampler["max_length"]) == (
        8,
        "prob_diff",
        False,
        260,
    )
    assert written["model"]["model_type"] == "llada" and written["model"]["fresh_retrofit"] is True
    assert written["settings"]["batch_size"] == 2 and written["settings"]["seed"] == 0
    assert written["generated_length"]["count"] == len(PROBLEMS)
    assert written["throughput"]["examples_per_second"] > 0 and written["throughput"]["tokens_per_second"] > 0
    assert written["reference_length"]["count"] == len(PROBLEMS)


def test_infill_entry_point_runs_the_mdm_baseline(llada_folder, tmp_path):
    args = [
        "--model", str(llada_folder), "--sampler", "mdm", "--limit", "3", "--steps", "4",
        "--gen-length", "8", "--block-length", "4", "--no-progress", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    summary = cli.infill_main(args)
    rows = _rows(tmp_path)
    assert [row["id"] for row in rows] == [f"SingleLineInfilling/HumanEval/0/L{i}#0" for i in (0, 1, 2)]
    assert all(row["status"] in ("passed", "failed", "timeout") for row in rows)
    assert all(row["num_tokens"] <= 8 for row in rows)
    assert summary["pass@1"] == sum(row["status"] == "passed" for row in rows) / 3
    assert summary["sampler"]["function"] == "infill_mdm"
    assert summary["sampler"]["suppress_tokens_text"] == ["<|boundary|>"]  # a middle never holds the marker
    assert (summary["sampler"]["gen_length"], summary["sampler"]["block_length"]) == (8, 4)
    assert (tmp_path / PLOT_FILE).exists()


def test_infill_script_runs_the_flex_sampler_as_a_program(llada_folder, tmp_path, monkeypatch):
    argv = [
        "eval/humaneval_infill.py", "--model", str(llada_folder), "--fresh-retrofit", "--limit", "2",
        "--steps", "4", "--max-length", "511", "--no-progress", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "eval" / "humaneval_infill.py"), run_name="__main__")
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["num_rows"] == 2 and summary["sampler"]["function"] == "infill"
    assert (summary["sampler"]["confidence"], summary["sampler"]["sliding_window"]) == ("top_prob", True)


def test_interrupted_run_resumes_to_the_same_summary(
    llada_folder, gsm8k_file, clean_gsm8k_run, tmp_path, monkeypatch
):
    clean_dir, clean_summary = clean_gsm8k_run
    real = generators.generate_flex
    calls = []

    def interrupted_after_two_batches(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(kwargs["row_seeds"])
        return real(*args, **kwargs)

    monkeypatch.setattr(generators, "generate_flex", interrupted_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path))
    assert len(_rows_in_shards(tmp_path)) == 4 and not (tmp_path / SUMMARY_FILE).exists()

    monkeypatch.setattr(generators, "generate_flex", real)
    resumed = cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path))
    assert _rows(tmp_path) == _rows(clean_dir)
    assert _stable(resumed) == _stable(clean_summary)
    assert resumed["this_run"]["rows_written_by_this_process"] == 1


def _rows_in_shards(folder):
    return [
        line for path in (Path(folder) / "shards").glob("*.jsonl") for line in path.read_text().splitlines()
    ]


def test_two_shard_jobs_merge_into_the_rows_of_one_process(
    llada_folder, gsm8k_file, clean_gsm8k_run, tmp_path
):
    clean_dir, clean_summary = clean_gsm8k_run
    first = cli.gsm8k_main(
        _flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path, "--num-shards", "2", "--shard-index", "1")
    )
    assert first is None and not (tmp_path / SUMMARY_FILE).exists()
    second = cli.gsm8k_main(
        _flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path, "--num-shards", "2", "--shard-index", "0")
    )
    assert _rows(tmp_path) == _rows(clean_dir)
    assert _stable(second) == _stable(clean_summary)


def test_missing_gsm8k_data_offline_says_how_to_pass_it(llada_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match=r"--data path\.jsonl.*DATA=path\.jsonl"):
        cli.gsm8k_main(["--model", str(llada_folder), "--sampler", "mdm", "--output-dir", str(tmp_path)])


def test_unreachable_hub_dataset_says_how_to_pass_the_data(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(cli.EvalConfigError, match=r"--data path\.jsonl.*ConnectionError: Couldn't reach"):
        cli.load_gsm8k_examples(None)


def test_settings_layer_defaults_preset_config_file_and_flags(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("preset: published\nmax-window: 16\nbatch_size: 4\n")
    settings = cli.resolve_settings(
        cli.INFILL, ["--model", "m", "--config", str(config), "--batch-size", "2"]
    )
    assert settings["steps"] == 4096 and settings["confidence"] == "top_prob"  # the preset
    assert settings["sliding_window"] is True and settings["window_scale"] == 15.0
    assert settings["max_window"] == 16  # the file beats the preset
    assert settings["batch_size"] == 2  # the flag beats the file
    assert settings["config"] == str(config.resolve())

    default = cli.resolve_settings(cli.GSM8K, ["--model", "m"])
    assert (default["steps"], default["confidence"], default["sliding_window"]) == (64, "prob_diff", False)
    published = cli.resolve_settings(cli.GSM8K, ["--model", "m", "--preset", "published", "--sampler", "mdm"])
    assert (published["steps"], published["gen_length"], published["block_length"]) == (256, 256, 32)


def test_settings_of_the_other_sampler_or_unknown_keys_are_refused(tmp_path):
    with pytest.raises(cli.EvalConfigError, match="other sampler"):
        cli.resolve_settings(cli.GSM8K, ["--model", "m", "--sampler", "mdm", "--confidence", "entropy"])
    config = tmp_path / "eval.yaml"
    config.write_text("stepz: 4\n")
    with pytest.raises(cli.EvalConfigError, match="unknown settings"):
        cli.resolve_settings(cli.GSM8K, ["--model", "m", "--config", str(config)])
    with pytest.raises(cli.EvalConfigError, match="--num-shards and --shard-index"):
        cli.resolve_settings(cli.GSM8K, ["--model", "m", "--num-shards", "2"])


def test_llada_with_the_flex_sampler_needs_a_retrofit(llada_folder, gsm8k_file, tmp_path):
    args = ["--model", str(llada_folder), "--data", str(gsm8k_file), "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="--fresh-retrofit"):
        cli.gsm8k_main(args)


def test_rerun_with_other_sampler_settings_is_refused(llada_folder, gsm8k_file, clean_gsm8k_run):
    clean_dir, _ = clean_gsm8k_run
    with pytest.raises(SystemExit, match=r"other settings \(sampler\.confidence: 'prob_diff' -> 'entropy'\)"):
        cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, clean_dir, "--confidence", "entropy"))
