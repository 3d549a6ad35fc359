"""The benchmark scripts run and print their ratios (tiny shapes; the numbers themselves are not checked).

Each script runs once as its own command line (a new process: exit status and stderr as a user sees them);
the other tests call its ``main`` in this process, which spares a Python + torch start (~7 s) each.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_benchmark(name, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True, env=env
    )


@pytest.fixture
def load_script(monkeypatch):
    """``load_script(NAME)``: benchmarks/NAME.py as a module, imported as ``python benchmarks/NAME.py`` imports
    it (its folder first on sys.path, for ``common``); a fresh module each call, so patches stay in one test."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))

    def load(name):
        spec = importlib.util.spec_from_file_location(Path(name).stem, REPO / "benchmarks" / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def test_bench_model_takes_the_shape_flags_and_prints_the_ratio(load_script, capsys):
    load_script("bench_model.py").main(
        "--d-model 64 --layers 2 --length 16 --batch 2 --vocab 1000 --repeats 1 --skip-memory".split()
    )
    out = capsys.readouterr().out
    assert "2 layers d=64, vocabulary 1,000" in out
    assert re.search(r"ratio FlexMDM/LLaDA \d+\.\d\d", out)


def test_bench_model_times_the_retrofit_setting_with_a_frozen_backbone(load_script, capsys):
    tiny = "--d-model 32 --layers 1 --length 8 --batch 2 --repeats 1 --skip-memory"
    load_script("bench_model.py").main([*tiny.split(), "--lora"])
    out = capsys.readouterr().out
    assert "vocabulary 384, frozen backbone + LoRA" in out
    assert re.search(r"ratio FlexMDM/LLaDA \d+\.\d\d", out)


def test_bench_model_refuses_a_zero_size():
    result = run_benchmark("bench_model.py", "--layers", "0", "--skip-memory")
    assert result.returncode == 2 and "--layers must be >= 1" in result.stderr


def test_bench_model_prints_the_attention_mask_memory_at_8_x_1024(load_script, capsys):
    load_script("bench_model.py").main(
        "--d-model 32 --layers 1 --length 8 --batch 2 --repeats 1 --skip-memory".split()
    )
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("8 x 1024"))
    # dense [8, 1025, 1025] bool vs the key-padding mask and the slot's keys, [8, 1025] each; nothing unpadded
    assert "8,405,000 B" in line and "16,400 B" in line and line.endswith("no padding 0 B")


SECTION_KEYS = {
    "forward": set(
        "status reason batch length padded ms tokens_per_s peak_memory_gb attention_kernels".split()
    ),
    "train_step": set(
        "status reason micro_batch x1_length lora_targets lora_r activation_checkpointing mixed_precision "
        "trainable_parameters xt_widths step_s step_s_all peak_memory_gb tokens_per_s forward_tokens_per_s "
        "flops_per_step mfu flop_formula loss".split()
    ),
    "generation": set(
        "status reason prompts prompt_length steps max_length generated_tokens flex_s flex_tokens_per_s "
        "fixed_canvas_s fixed_canvas_tokens_per_s ratio same_output peak_memory_gb".split()
    ),
    "forward_backward": set(
        "status reason batch length llada_ms flexmdm_ms ratio peak_memory_gb setup".split()
    ),
}
TOP_KEYS = set(
    "check version date mode environment model forward train_step generation forward_backward total_s".split()
)


@pytest.fixture
def gpu_check_report(tmp_path, load_script, capsys, monkeypatch):
    """``gpu_check_report(*flags)``: the JSON report and the printed table of ``gpu_check.py --tiny``."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    gpu_check = load_script("gpu_check.py")

    def run(*args):
        out = tmp_path / "gpu_check.json"
        assert gpu_check.main(["--tiny", "--out", str(out), *args]) == 0
        return json.loads(out.read_text()), capsys.readouterr().out

    return run


def check_keys(report):
    assert set(report) == TOP_KEYS
    assert set(report["forward"]) == {"single", "batch", "batch_padded"}
    for entry in report["forward"].values():
        assert set(entry) == SECTION_KEYS["forward"]
    for name in ("train_step", "generation", "forward_backward"):
        assert set(report[name]) == SECTION_KEYS[name], name


def test_gpu_check_tiny_runs_every_section_through_the_real_code(gpu_check_report):
    report, stdout = gpu_check_report()
    check_keys(report)
    assert report["mode"] == "tiny" and report["total_s"] < 60
    for entry in report["forward"].values():
        assert entry["status"] == "ok" and entry["ms"] > 0
        assert entry["attention_kernels"] and not entry["attention_kernels"][0].startswith("none")
    step = report["train_step"]
    assert step["status"] == "ok" and step["activation_checkpointing"] and step["lora_targets"] == "published"
    assert step["step_s"] > 0 and step["flops_per_step"] > 0 and step["loss"] > 0
    assert len(step["xt_widths"]) == len(step["step_s_all"]) >= 2
    generation = report["generation"]
    assert generation["status"] == "ok" and generation["same_output"]
    # every row grows to its target length: 4 prompts x 25 generated tokens
    assert generation["generated_tokens"] == 100 and generation["ratio"] > 0
    backward = report["forward_backward"]
    assert backward["status"] == "ok" and backward["ratio"] > 0
    for row in (
        "forward single 1x64",
        "train_step 8x64",
        "generation 4x20, 16 steps",
        "forward_backward 8x64",
    ):
        assert row in stdout


def test_gpu_check_skips_what_does_not_fit_with_the_reason_and_the_same_keys(gpu_check_report):
    report, stdout = gpu_check_report("--budget-s", "0.001")
    check_keys(report)
    sections = [
        *report["forward"].values(),
        report["train_step"],
        report["generation"],
        report["forward_backward"],
    ]
    for entry in sections:
        assert entry["status"] == "skipped" and entry["reason"] == "time budget used up"
    assert "skipped" in stdout


def test_gpu_check_refuses_bad_flags_before_building_anything(tmp_path, load_script, capsys):
    gpu_check = load_script("gpu_check.py")

    def build_models(*args):
        raise AssertionError("built a model for flags it refuses")

    gpu_check.build_models = build_models
    for args, message in (
        (["--tiny", "--weights", str(tmp_path)], "drop --tiny"),
        (["--weights", str(tmp_path), "--device", "cpu"], "has no config.json"),
        (["--tiny", "--budget-s", "0"], "--budget-s must be > 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, (args, err)
        assert "Traceback" not in err
    # The last one once more as the command line a user runs (it stops before flexretrofit is imported).
    result = run_benchmark("gpu_check.py", "--tiny", "--budget-s", "0")
    assert result.returncode == 2 and "--budget-s must be > 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_padding_efficiency_measures_humaneval_and_projects_gpu_hours(load_script, capsys):
    load_script("padding_efficiency.py").main(["--steps", "2"])
    out = capsys.readouterr().out
    assert "HumanEval (prompt + canonical solution): 164 documents" in out
    grouped, shuffled, canvas = (
        float(x)
        for x in re.search(
            r"length-grouped (\d\.\d+), random micro-batches (\d\.\d+), fixed 1024 canvas (\d\.\d+)", out
        ).groups()
    )
    assert 1.0 >= grouped > shuffled > canvas > 0.0
    work, balanced_work, synchronous, balanced, published = (
        float(x)
        for x in re.search(
            r"work (\S+) \((\S+) balanced\).*unbalanced (\S+), balanced (\S+); published layout (\S+)$",
            out,
            re.MULTILINE,
        ).groups()
    )
    assert work <= synchronous <= published and balanced_work <= balanced < synchronous
    spreads = [float(x) for x in re.findall(r"max/mean micro-batch cost over the 16 GPUs (\S+)", out)]
    assert len(spreads) == 2 and spreads[1] < spreads[0]  # unbalanced, then balanced
    last = out.strip().splitlines()[-1]
    ratios = re.fullmatch(r"step cost vs published layout: unbalanced (\S+), balanced (\S+)", last).groups()
    assert tuple(map(float, ratios)) == pytest.approx(
        (synchronous / published, balanced / published), abs=1e-3
    )
    assert re.search(r"implied MFU 0\.2\d\d", out) and "H100-hours for 200,000 steps" in out


def test_padding_efficiency_refuses_a_missing_file(tmp_path):
    result = run_benchmark("padding_efficiency.py", "--jsonl", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "does not exist" in result.stderr
