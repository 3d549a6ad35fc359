"""Two CPU processes with DeepSpeed ZeRO-3 (gloo) compute what one process computes on the same global batch.

The 2-process run (micro batch 4 per rank) and the 1-process run (micro batch 4, 2 accumulation steps) see
the same global batches, noise and dropout (slot r * accumulation + m of each step), so their losses and
weights agree to float rounding. The ZeRO-3 run is also stopped and resumed from its checkpoint, and its
export (16-bit gather) loads with ``from_pretrained`` and generates. With ``data.balance=tokens`` the two
layouts again agree (balanced vs fixed on one process: tests/test_training_balance.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_runs import free_port

from flexretrofit.models import FlexMDMForMaskedDiffusion, load_tokenizer
from flexretrofit.testing import save_tiny_llada_checkpoint
from flexretrofit.testing_cli import write_tiny_data
from flexretrofit.training import read_log

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIG = REPO / "recipes" / "accelerate" / "zero3_cpu_2proc.yaml"
RECIPE = REPO / "recipes" / "retrofit_llada.py"

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def write_config(root: Path, data: dict, out_dir: Path) -> Path:
    values = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_retrofit_cpu.yaml").read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["corpus"])}]
    values["train"].update(output_dir=str(out_dir), max_steps=4, save_every=2)
    values["eval"].update(every=2)
    path = out_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(values))
    return path


def run(command: list[str], timeout: int = 240) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def launch_zero3(config: Path, *overrides: str) -> None:
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIG),
        "--main_process_port",
        str(free_port()),
    ]
    run([*accelerate, str(RECIPE), "--config", str(config), *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    save_tiny_llada_checkpoint(root / "llada")
    data = write_tiny_data(root / "data")
    single, zero3 = root / "single", root / "zero3"
    run([sys.executable, str(RECIPE), "--config", str(write_config(root, data, single))])
    zero3_config = write_config(root, data, zero3)
    launch_zero3(zero3_config, "train.stop_at_step=2")  # stops after the step-2 checkpoint
    launch_zero3(zero3_config, "train.resume_from=latest")  # resumes in fresh processes
    return single, zero3


@pytest.fixture(scope="module")
def balanced_runs(runs):
    """data.balance=tokens on 1 process (2 accumulation slots) and on 2 ZeRO-3 processes: the same rows
    regrouped the same way, and each regrouped micro-batch keeps its slot's dropout seed."""
    single_balanced, zero3_balanced = (
        runs[0].parent / name for name in ("single_balanced", "zero3_balanced")
    )
    config = runs[0].with_suffix(".yaml")
    overrides = ["data.balance=tokens", "eval.every=0"]
    run(
        [
            sys.executable,
            str(RECIPE),
            "--config",
            str(config),
            *overrides,
            f"train.output_dir={single_balanced}",
        ]
    )
    launch_zero3(config, *overrides, f"train.output_dir={zero3_balanced}")
    return single_balanced, zero3_balanced


def test_the_run_is_really_distributed_with_zero3(runs):
    _, zero3 = runs
    starts = read_log(zero3 / "log.jsonl", "start")
    assert [(s["distributed_type"], s["num_processes"]) for s in starts] == [("DEEPSPEED", 2)] * 2
    assert [(s["micro_batch_size"], s["gradient_accumulation_steps"]) for s in starts] == [(4, 1)] * 2
    assert [r["step"] for r in read_log(zero3 / "log.jsonl", "resume")] == [2]
    single_start = read_log(runs[0] / "log.jsonl", "start")[0]
    assert (single_start["num_processes"], single_start["gradient_accumulation_steps"]) == (1, 2)


def test_losses_match_a_single_process_run(runs):
    single, zero3 = runs
    expected = read_log(single / "log.jsonl", "train")
    got = read_log(zero3 / "log.jsonl", "train")
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [1, 2, 3, 4]
    for a, b in zip(got, expected):
        assert a["loss_tokens"] == b["loss_tokens"]
        for key in ("loss", "unmask_loss", "insertion_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    evals = [r["eval_loss"] for r in read_log(zero3 / "log.jsonl", "eval")]
    assert evals == pytest.approx([r["eval_loss"] for r in read_log(single / "log.jsonl", "eval")], rel=1e-5)


def test_post_step_weights_match_a_single_process_run(runs):
    single, zero3 = runs
    expected = load_file(single / "final" / "model.safetensors")
    got = load_file(zero3 / "final" / "model.safetensors")
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
    # Training moved them: the zero-initialised AdaLN is no longer zero, LoRA was merged into q_proj.
    assert got["adaln.groups.0.weight"].abs().max() > 0
    initial = {}
    for shard in (single.parent / "llada").glob("*.safetensors"):
        initial.update(load_file(shard))
    name = "model.transformer.blocks.0.q_proj.weight"
    assert not torch.allclose(got["backbone." + name], initial[name])


def test_zero3_export_loads_and_generates(runs):
    _, zero3 = runs
    model = FlexMDMForMaskedDiffusion.from_pretrained(zero3 / "final").eval()
    tokenizer = load_tokenizer(zero3 / "final")
    prompt = torch.tensor([tokenizer("The model fills in", add_special_tokens=False)["input_ids"]])
    out = model.generate_flex(prompt, steps=8, max_length=48)
    again = model.generate_flex(prompt, steps=8, max_length=48)
    assert torch.equal(out.sequences, again.sequences)  # seeded sampler
    length = int(out.lengths[0])
    assert prompt.shape[1] < length <= 48  # the model inserted tokens after the prompt
    assert torch.equal(out.sequences[0, : prompt.shape[1]], prompt[0])
    assert not (out.sequences[0, :length] == model.config.mask_token_id).any()


def test_balanced_zero3_matches_a_balanced_single_process_run(balanced_runs):
    single, zero3 = balanced_runs
    assert [s["num_processes"] for s in read_log(zero3 / "log.jsonl", "start")] == [2]
    expected = read_log(single / "log.jsonl", "train")
    got = read_log(zero3 / "log.jsonl", "train")
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [1, 2, 3, 4]
    for a, b in zip(got, expected):
        assert (a["loss_tokens"], a["tokens"]) == (b["loss_tokens"], b["tokens"])
        for key in ("loss", "unmask_loss", "insertion_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    expected_weights = load_file(single / "final" / "model.safetensors")
    got_weights = load_file(zero3 / "final" / "model.safetensors")
    for name in expected_weights:
        torch.testing.assert_close(got_weights[name], expected_weights[name], atol=1e-5, rtol=1e-4, msg=name)
