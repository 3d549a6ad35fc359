"""End to end on a tiny random LLaDA checkpoint: both entry points, resume, shards, settings, errors."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flexretrofit.evaluation import cli, inputs
from flexretrofit.evaluation.harness import (
    PLOT_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    RunConfigMismatch,
    check_run_config,
)
from flexretrofit.evaluation.options import GSM8K, INFILL, PRESETS
from flexretrofit.evaluation.settings import EvalConfigError, resolve_settings
from flexretrofit.sampling.methods import SAMPLING_METHODS
from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint

REPO = Path(__file__).resolve().parents[2]

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
    llada_folder, gsm8k_file, clean_gsm8k_run, tmp_path, monkeypatch, patch_sampler
):
    clean_dir, clean_summary = clean_gsm8k_run
    row = SAMPLING_METHODS["flexmdm"]
    real = row.generate
    calls = []

    def interrupted_after_two_batches(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(kwargs["row_seeds"])
        return real(*args, **kwargs)

    patch_sampler("flexmdm", "generate", interrupted_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path))
    assert len(_rows_in_shards(tmp_path)) == 4 and not (tmp_path / SUMMARY_FILE).exists()

    monkeypatch.setitem(SAMPLING_METHODS, "flexmdm", row)
    resumed = cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, tmp_path))
    assert _rows(tmp_path) == _rows(clean_dir)
    assert _stable(resumed) == _stable(clean_summary)
    assert resumed["this_run"]["rows_written_by_this_process"] == 1


def test_a_results_folder_of_the_old_sampler_spelling_resumes(
    llada_folder, gsm8k_file, clean_gsm8k_run, tmp_path
):
    # Folders written before the method vocabulary record the sampler as {"sampler": "flex", ...}.
    clean_dir, clean_summary = clean_gsm8k_run
    old_dir = tmp_path / "old"
    shutil.copytree(clean_dir, old_dir)
    run_config = json.loads((old_dir / "run_config.json").read_text())
    method = run_config["sampler"].pop("method")
    assert method == "flexmdm" and "method" not in run_config
    run_config["sampler"] = {"sampler": "flex", **run_config["sampler"]}
    (old_dir / "run_config.json").write_text(json.dumps(run_config))
    (old_dir / SUMMARY_FILE).unlink()

    resumed = cli.gsm8k_main(_flex_gsm8k_args(llada_folder, gsm8k_file, old_dir, "--sampler", "flex"))
    assert resumed["this_run"]["rows_written_by_this_process"] == 0
    assert _rows(old_dir) == _rows(clean_dir) and _stable(resumed) == _stable(clean_summary)
    assert resumed["sampler"]["method"] == "flexmdm" and resumed["settings"]["method"] == "flexmdm"

    run_config["sampler"]["sampler"] = "mdm"  # an old folder of the other method is still refused
    (old_dir / "run_config.json").write_text(json.dumps(run_config))
    with pytest.raises(RunConfigMismatch, match="sampler.method: 'mdm' -> 'flexmdm'"):
        check_run_config(old_dir, {"sampler": {"method": "flexmdm"}}, only_given=True)


def test_the_method_flag_reads_the_old_sampler_flag_and_key(tmp_path):
    assert resolve_settings(GSM8K, ["--model", "m", "--sampler", "flex"])["method"] == "flexmdm"
    assert resolve_settings(GSM8K, ["--model", "m", "--sampler", "mdm"])["method"] == "mdm"
    assert resolve_settings(GSM8K, ["--model", "m", "--method", "mdm"])["method"] == "mdm"
    assert resolve_settings(GSM8K, ["--model", "m"])["output_dir"] == str(Path("runs/eval/gsm8k-flexmdm"))
    config = tmp_path / "eval.yaml"
    config.write_text("sampler: flex\nsteps: 4\n")
    settings = resolve_settings(GSM8K, ["--model", "m", "--config", str(config)])
    assert settings["method"] == "flexmdm" and "sampler" not in settings and settings["steps"] == 4
    with pytest.raises(EvalConfigError, match="invalid choice: 'ar'"):
        resolve_settings(GSM8K, ["--model", "m", "--method", "ar"])
    config.write_text("method: ar\n")
    with pytest.raises(
        EvalConfigError, match=r"eval\.yaml, line 1: method: got 'ar'; pass one of \['flexmdm', 'mdm'\]"
    ):
        resolve_settings(GSM8K, ["--model", "m", "--config", str(config)])


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


def _usage_error(main, args, capsys):
    """Run an entry point that must stop on a user mistake; return its one line of stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_hub_gsm8k_offline_says_what_else_to_pass(llada_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--model", str(llada_folder), "--sampler", "mdm", "--data", "hub", "--output-dir", str(tmp_path)]
    line = _usage_error(cli.gsm8k_main, args, capsys)
    assert "--data path.jsonl" in line and "shipped test split" in line


def test_gsm8k_without_data_runs_offline_on_the_shipped_test_split(llada_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    args = ["--model", str(llada_folder), "--sampler", "mdm", "--limit", "2", "--steps", "2"]
    cli.gsm8k_main(
        [*args, "--gen-length", "4", "--block-length", "4", "--no-progress", "--output-dir", str(out)]
    )
    rows = _rows(out)
    assert [row["id"] for row in rows] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert [row["ground_truth"] for row in rows] == ["18", "3"]  # the split's first two problems


def test_a_split_that_does_not_ship_says_to_load_it_from_the_hub(llada_folder, tmp_path, capsys):
    args = [
        "--model",
        str(llada_folder),
        "--sampler",
        "mdm",
        "--split",
        "train",
        "--output-dir",
        str(tmp_path),
    ]
    line = _usage_error(cli.gsm8k_main, args, capsys)
    assert "only GSM8K's test split ships" in line and "--data hub" in line


def test_unreachable_hub_dataset_says_how_to_pass_the_data(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        EvalConfigError, match=r"ConnectionError: Couldn't reach.*shipped test split.*--data path\.jsonl"
    ):
        inputs.load_gsm8k_examples("hub")


def test_settings_layer_defaults_preset_config_file_and_flags(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("preset: published\nmax-window: 16\nbatch_size: 4\n")
    settings = resolve_settings(INFILL, ["--model", "m", "--config", str(config), "--batch-size", "2"])
    assert settings["steps"] == 4096 and settings["confidence"] == "top_prob"  # the preset
    assert settings["sliding_window"] is True and settings["window_scale"] == 15.0
    assert settings["max_window"] == 16  # the file beats the preset
    assert settings["batch_size"] == 2  # the flag beats the file
    assert settings["config"] == str(config.resolve())

    default = resolve_settings(GSM8K, ["--model", "m"])
    assert (default["steps"], default["confidence"], default["sliding_window"]) == (64, "prob_diff", False)
    published = resolve_settings(GSM8K, ["--model", "m", "--preset", "published", "--sampler", "mdm"])
    assert (published["steps"], published["gen_length"], published["block_length"]) == (256, 256, 32)


def test_settings_of_the_other_sampler_or_unknown_keys_are_refused(tmp_path):
    with pytest.raises(EvalConfigError, match="other sampler"):
        resolve_settings(GSM8K, ["--model", "m", "--sampler", "mdm", "--confidence", "entropy"])
    config = tmp_path / "eval.yaml"
    config.write_text("stepz: 4\n")
    with pytest.raises(EvalConfigError, match=r"eval\.yaml, line 1: unknown setting 'stepz'"):
        resolve_settings(GSM8K, ["--model", "m", "--config", str(config)])
    with pytest.raises(EvalConfigError, match="--num-shards and --shard-index"):
        resolve_settings(GSM8K, ["--model", "m", "--num-shards", "2"])


def test_llada_with_the_flex_sampler_needs_a_retrofit(llada_folder, gsm8k_file, tmp_path, capsys):
    args = ["--model", str(llada_folder), "--data", str(gsm8k_file), "--output-dir", str(tmp_path)]
    assert "--fresh-retrofit" in _usage_error(cli.gsm8k_main, args, capsys)


def test_rerun_with_other_sampler_settings_is_refused(llada_folder, gsm8k_file, clean_gsm8k_run, capsys):
    clean_dir, _ = clean_gsm8k_run
    args = _flex_gsm8k_args(llada_folder, gsm8k_file, clean_dir, "--confidence", "entropy")
    line = _usage_error(cli.gsm8k_main, args, capsys)
    assert "other settings (sampler.confidence: 'prob_diff' -> 'entropy')" in line


# ------------------------------------------------------------------------------------------------
# every input checked before generation: one line on stderr, exit code 2, no traceback
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    lines = [json.dumps(problem) for problem in PROBLEMS[:3]]
    bob = [*lines[:2], json.dumps({"question": "Who is it?", "answer": "It is Bob.\n#### Bob"}), lines[2]]
    (folder / "bob.jsonl").write_text("\n".join(bob) + "\n")
    broken = [*lines, lines[0][:-3]]  # row 4 is cut short
    (folder / "broken.jsonl").write_text("\n".join(broken) + "\n")
    (folder / "broken.yaml").write_text("steps: 4\nbatch_size: [2\nseed: 1\n")
    (folder / "nan.yaml").write_text("steps: 4\ntemperature: .nan\n")
    (folder / "words.yaml").write_text("steps: four\n")
    (folder / "a_file").write_text("not a folder\n")
    damaged = folder / "damaged_run" / "shards"
    damaged.mkdir(parents=True)
    (damaged / "rank000-of-001.jsonl").write_text('{"id": "a"}\n{"id": "b"\n{"id": "c"}\n')
    return folder


GSM8K_CASES = [
    # (extra flags, what the one line must say); {bad} is the folder of bad files.
    (["--data", "{bad}/bob.jsonl"], "bob.jsonl, line 3: the reference after '####' is 'Bob', not a number"),
    (["--data", "{bad}/broken.jsonl"], "broken.jsonl, line 4: not valid JSON"),
    (["--data", "{bad}/missing.jsonl"], "no GSM8K file at"),
    (["--limit", "-1"], "--limit: got -1; pass an integer >= 1"),
    (["--limit", "0"], "--limit: got 0; pass an integer >= 1"),
    (["--temperature", "inf"], "--temperature: got inf; pass a finite number >= 0"),
    (["--temperature", "nan"], "--temperature: got nan; pass a finite number >= 0"),
    (["--temperature", "-0.5"], "--temperature: got -0.5; pass a finite number >= 0"),
    (["--temperature", "hot"], "argument --temperature: invalid float value: 'hot'; see --help"),
    (["--steps", "0"], "--steps: got 0; pass an integer >= 1"),
    (["--batch-size", "0"], "--batch-size: got 0; pass an integer >= 1"),
    (["--seed", "-1"], "--seed: got -1; pass an integer >= 0"),
    (["--gen-length", "0"], "--gen-length: got 0; pass an integer >= 1"),
    (["--cfg-scale", "nan"], "--cfg-scale: got nan; pass a finite number >= 0"),
    (
        ["--block-length", "3"],
        "invalid sampler settings",
    ),  # 4 is not a multiple of 3: the sampler's own check
    (["--num-shards", "2", "--shard-index", "2"], "--shard-index is 2, but the shards are numbered 0..1"),
    (["--num-shards", "0", "--shard-index", "0"], "--num-shards: got 0; pass an integer >= 1"),
    (["--device", "nonsense"], "--device 'nonsense' is not a device"),
    (["--config", "{bad}/broken.yaml"], "broken.yaml, line 3: not valid YAML"),
    (["--config", "{bad}/nan.yaml"], "nan.yaml, line 2: temperature: got nan; pass a finite number >= 0"),
    (["--config", "{bad}/words.yaml"], "words.yaml, line 1: steps: got 'four'; pass an integer >= 1"),
    (["--config", "{bad}/missing.yaml"], "no config file at"),
    (["--output-dir", "{bad}/a_file"], "a_file is a file; pass a folder"),
    (["--output-dir", "{bad}/damaged_run"], "rank000-of-001.jsonl, line 2 is not a JSON object"),
    (["--confidence", "entropy"], "settings of the other sampler"),
]
INFILL_CASES = [
    (
        ["--k", "1", "5"],
        "--k asks for pass@5, which needs at least 5 samples per task, but --num-samples is 1",
    ),
    (["--k", "0"], "--k: got 0; pass an integer >= 1"),
    (["--sandbox-workers", "0"], "--sandbox-workers: got 0; pass an integer >= 1"),
    (["--sandbox-timeout", "0"], "--sandbox-timeout: got 0.0; pass a finite number > 0"),
    (["--sandbox-timeout", "1e300"], "--sandbox-timeout: got 1e+300; pass a finite number > 0 and <= 3600"),
    (["--num-samples", "0"], "--num-samples: got 0; pass an integer >= 1"),
    (["--variant", "two_lines"], "argument --variant: invalid choice: 'two_lines'"),
    (["--temperature", "inf"], "--temperature: got inf; pass a finite number >= 0"),
]


def _mdm_args(llada_folder, tmp_path, gsm8k_file=None):
    data = [] if gsm8k_file is None else ["--data", str(gsm8k_file)]
    return [
        "--model", str(llada_folder), "--sampler", "mdm", "--steps", "4", "--gen-length", "4",
        "--block-length", "4", "--no-progress", "--output-dir", str(tmp_path / "out"), *data,
    ]  # fmt: skip


@pytest.fixture
def no_model_loading(monkeypatch):
    """Every bad input must be refused before a model is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "load_model", refuse)


@pytest.mark.parametrize("extra, message", GSM8K_CASES)
def test_bad_gsm8k_inputs_stop_before_the_model_with_one_line(
    llada_folder, gsm8k_file, bad_inputs, tmp_path, capsys, no_model_loading, extra, message
):
    extra = [value.format(bad=bad_inputs) for value in extra]
    line = _usage_error(cli.gsm8k_main, _mdm_args(llada_folder, tmp_path, gsm8k_file) + extra, capsys)
    assert message in line
    assert not (tmp_path / "out" / "run_config.json").exists()


@pytest.mark.parametrize("extra, message", INFILL_CASES)
def test_bad_infill_inputs_stop_before_the_model_with_one_line(
    llada_folder, tmp_path, capsys, no_model_loading, extra, message
):
    line = _usage_error(cli.infill_main, _mdm_args(llada_folder, tmp_path) + extra, capsys)
    assert message in line


MODEL_CASES = [
    # (--model inside the folder of bad checkpoints, what the one line must say)
    ("empty", "has no config.json; pass the folder that holds config.json"),
    ("a_file", "a_file is a file; pass the folder that holds config.json"),
    ("no_such", "no_such does not exist; pass the folder that holds config.json"),
    ("broken", "config.json is not valid JSON"),
    ("untyped", "config.json has no model_type"),
    ("bert", "config.json model_type is 'bert'; this evaluation runs 'flexmdm' and 'llada' checkpoints"),
]


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_models")
    (folder / "empty").mkdir()
    (folder / "a_file").write_text("not a folder\n")
    configs = {
        "broken": '{"model_type": "llada",',
        "untyped": '{"d_model": 8}',
        "bert": '{"model_type": "bert"}',
    }
    for name, text in configs.items():
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(text)
    return folder


def _with_model(args, model):
    args = list(args)
    args[args.index("--model") + 1] = str(model)
    return args


@pytest.mark.parametrize("model, message", MODEL_CASES)
def test_a_bad_model_path_stops_before_the_model_with_one_line(
    llada_folder, gsm8k_file, bad_models, tmp_path, capsys, no_model_loading, model, message
):
    args = _with_model(_mdm_args(llada_folder, tmp_path, gsm8k_file), bad_models / model)
    assert message in _usage_error(cli.gsm8k_main, args, capsys)


def test_a_hub_id_without_a_reachable_config_says_to_pass_a_folder(
    llada_folder, gsm8k_file, tmp_path, capsys, monkeypatch, no_model_loading
):
    from transformers import PreTrainedConfig

    def unreachable(*args, **kwargs):
        raise OSError("no connection")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(PreTrainedConfig, "get_config_dict", staticmethod(unreachable))
    args = _with_model(_mdm_args(llada_folder, tmp_path, gsm8k_file), "owner/name")
    line = _usage_error(cli.gsm8k_main, args, capsys)
    assert "owner/name is not a local folder and its config.json could not be read from the hub" in line


def test_a_truncated_shard_found_at_loading_is_one_line_too(llada_folder, gsm8k_file, tmp_path, capsys):
    folder = tmp_path / "truncated"
    shutil.copytree(llada_folder, folder)
    shard = sorted(folder.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    args = _with_model(_mdm_args(llada_folder, tmp_path, gsm8k_file), folder)
    line = _usage_error(cli.gsm8k_main, [*args, "--limit", "1"], capsys)
    assert f"{shard} is incomplete or corrupt" in line


def test_the_shipped_defaults_and_presets_pass_the_checks():
    for benchmark in (GSM8K, INFILL):
        for sampler in ("flex", "mdm"):
            resolve_settings(benchmark, ["--model", "m", "--sampler", sampler])
            for preset in PRESETS:
                resolve_settings(benchmark, ["--model", "m", "--sampler", sampler, "--preset", preset])


def test_a_program_with_a_bad_reference_exits_2_with_one_line_and_no_traceback(llada_folder, bad_inputs):
    args = [
        sys.executable, str(REPO / "eval" / "gsm8k.py"), "--model", str(llada_folder), "--sampler", "mdm",
        "--data", str(bad_inputs / "bob.jsonl"), "--output-dir", str(bad_inputs / "program_out"),
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {bad_inputs / 'bob.jsonl'}, line 3: the reference after '####' is 'Bob', not a number; "
        "fix or remove that record"
    ]
    assert not (bad_inputs / "program_out").exists()  # nothing generated, nothing written
