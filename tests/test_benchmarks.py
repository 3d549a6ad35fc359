"""The benchmark scripts run and print their ratios (tiny shapes; the numbers themselves are not checked)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(name, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True, env=env
    )


def test_bench_model_takes_the_shape_flags_and_prints_the_ratio():
    result = run_benchmark(
        "bench_model.py",
        "--d-model",
        "64",
        "--layers",
        "2",
        "--length",
        "16",
        "--batch",
        "2",
        "--vocab",
        "1000",
        "--repeats",
        "1",
        "--skip-memory",
    )
    assert result.returncode == 0, result.stderr
    assert "2 layers d=64, vocabulary 1,000" in result.stdout
    assert re.search(r"ratio FlexMDM/LLaDA \d+\.\d\d", result.stdout)


def test_bench_model_refuses_a_zero_size():
    result = run_benchmark("bench_model.py", "--layers", "0", "--skip-memory")
    assert result.returncode == 2 and "--layers must be >= 1" in result.stderr
