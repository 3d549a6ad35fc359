"""Training on a streamed corpus (``data.streaming``): lazy tokenisation, exact resume, config checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_runs import free_port, make_trainer, tiny_config, train_losses

from flexretrofit.data import corpus
from flexretrofit.training import (
    ConfigError,
    list_checkpoints,
    load_config,
    read_log,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]
# 6 steps of 8 samples; windows of 16 samples (2 steps each); checkpoints at 3 (mid-window) and 6.
RUN = {"train.max_steps": 6, "train.save_every": 3, "eval.every": 3, "data.shuffle_buffer": 16}


def streaming_config(tiny, out_dir, **changes):
    """The tiny CPU retrofit config, streamed, evaluating on the first 8 samples of the same corpus."""
    streamed = {"data.eval_sources": [{"path": str(tiny[1]["corpus"])}], "data.streaming": True}
    return tiny_config(tiny, out_dir, **{**streamed, **changes})


def record_batches(trainer):
    """Make ``trainer`` keep the token ids of every step's samples: ``{step: [[ids], ...]}``."""
    seen = {}
    noise = trainer._noise

    def recording(samples):
        seen[trainer.step + 1] = [sample["input_ids"].tolist() for sample in samples]
        return noise(samples)

    trainer._noise = recording
    return seen


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed")
    trainer = make_trainer(streaming_config(tiny, out, **RUN))
    batches = record_batches(trainer)
    trainer.train()
    return out, batches, train_losses(out)


def test_nothing_is_tokenised_before_the_first_step(tiny, tmp_path, monkeypatch):
    calls = []
    chunk = corpus.DocumentChunker.__call__
    monkeypatch.setattr(corpus.DocumentChunker, "__call__", lambda self, b: calls.append(1) or chunk(self, b))
    config = streaming_config(tiny, tmp_path, **{"train.max_steps": 2, "eval.num_samples": 0})
    trainer = make_trainer(config)
    assert calls == []  # datasets built, trainer set up: no document read or tokenised yet
    trainer.train()
    assert len(calls) > 0
    assert read_log(tmp_path / "log.jsonl", "start")[0]["train_samples"] is None
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl", "train")] == [1, 2]


def test_a_streamed_run_trains_on_length_grouped_batches(uninterrupted):
    out, batches, losses = uninterrupted
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(len(batch) == 8 for batch in batches.values())
    assert len({tuple(ids) for batch in batches.values() for ids in batch}) == 48  # no sample twice
    assert len(read_log(out / "log.jsonl", "eval")) == 2
    state = json.loads((list_checkpoints(out)[0] / "trainer_state.json").read_text())
    assert state["step"] == 3
    (rank0,) = state["sampler"]["per_rank"]
    assert (rank0["window"], rank0["position"]) == (1, 1)  # step 3 is the first batch of the second window


class Crash(Exception):
    pass


def crash_at_step_5(trainer, metrics):
    if trainer.step == 5:  # after the step-3 checkpoint, before the next one: nothing saved
        raise Crash


def test_resume_after_a_crash_sees_exactly_the_same_batches(tiny, tmp_path, uninterrupted):
    _, straight, losses = uninterrupted
    crashing = make_trainer(streaming_config(tiny, tmp_path, **RUN), callbacks=[crash_at_step_5])
    before = record_batches(crashing)
    with pytest.raises(Crash):
        crashing.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003"]

    resumed = make_trainer(streaming_config(tiny, tmp_path, **RUN, **{"train.resume_from": "latest"}))
    after = record_batches(resumed)
    resumed.train()
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl", "resume")] == [3]
    assert {s: before[s] for s in (1, 2, 3)} == {s: straight[s] for s in (1, 2, 3)}
    assert after == {s: straight[s] for s in (4, 5, 6)}  # token ids of every sample, in order
    assert train_losses(tmp_path) == losses  # 1-5 from the crashed run (4, 5 redone after resuming), 6


def test_a_streamed_checkpoint_does_not_resume_a_map_style_run(tiny, tmp_path, uninterrupted):
    checkpoint = str(list_checkpoints(uninterrupted[0])[0])
    config = streaming_config(tiny, tmp_path, **RUN, **{"train.resume_from": checkpoint})
    config.data.streaming, config.data.eval_sources = False, []
    with pytest.raises(ValueError, match="resume with the same data.streaming setting"):
        make_trainer(config).train()


@pytest.mark.parametrize(
    "changes, world_size, message",
    [
        ({"eval.num_samples": 8, "data.eval_sources": []}, 1, "give data.eval_sources"),
        ({"data.shuffle_buffer": 12}, 1, "multiple of the per-process batch 8"),
        ({"data.shuffle_buffer": 6}, 2, "multiple of the per-process batch 4"),
        ({"data.num_proc": 4}, 1, "set data.num_proc=null"),
    ],
)
def test_streaming_options_that_need_the_whole_dataset_fail_at_config_time(
    tiny, tmp_path, changes, world_size, message
):
    with pytest.raises(ConfigError, match=message):
        validate_config(streaming_config(tiny, tmp_path, **changes), world_size)


def test_the_8b_retrofit_streams_on_8_and_16_gpus(tiny):
    config = load_config(REPO / "recipes" / "configs" / "retrofit_llada_8b.yaml")
    assert config.data.streaming and config.data.num_proc is None and config.data.eval_sources
    config.model.init_from, config.data.max_length = str(tiny[0] / "llada"), 32  # no hub access here
    for world_size in (8, 16):
        validate_config(config, world_size)


def launch_two_processes(config: Path, *overrides: str) -> None:
    """The retrofit recipe on 2 CPU processes with DeepSpeed ZeRO-3 (gloo)."""
    port = free_port()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [
        str(REPO / "recipes" / "accelerate" / "zero3_cpu_2proc.yaml"),
        "--main_process_port",
        str(port),
    ]
    command += [str(REPO / "recipes" / "retrofit_llada.py"), "--config", str(config), *overrides]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_stream_their_own_shares_and_resume_exactly(tiny, tmp_path):
    def config_file(out, balance="none"):
        config = streaming_config(tiny, out, **{"train.max_steps": 4, "train.save_every": 2, "eval.every": 2})
        config.data.shuffle_buffer = 8  # 2 batches of 4 per process and window
        config.data.balance = balance
        config.lora.dropout = 0.0  # dropout masks follow micro-batches: without it balancing changes nothing
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(config.to_dict()))
        return path

    # The fixed layout straight through; the balanced one (each rank gathers the shares, regroups the rows)
    # straight through and stopped + resumed in fresh processes.
    straight, balanced, resumed = tmp_path / "straight", tmp_path / "balanced", tmp_path / "resumed"
    launch_two_processes(config_file(straight))
    launch_two_processes(config_file(balanced, "tokens"))
    launch_two_processes(config_file(resumed, "tokens"), "train.stop_at_step=2")
    launch_two_processes(config_file(resumed, "tokens"), "train.resume_from=latest")
    assert read_log(resumed / "log.jsonl", "start")[0]["num_processes"] == 2
    assert train_losses(resumed) == train_losses(balanced) and sorted(train_losses(balanced)) == [1, 2, 3, 4]
    expected = read_log(straight / "log.jsonl", "train")
    for got, want in zip(read_log(balanced / "log.jsonl", "train"), expected, strict=True):
        assert (got["loss_tokens"], got["tokens"]) == (want["loss_tokens"], want["tokens"])
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), got["step"]
    state = json.loads((list_checkpoints(resumed)[0] / "trainer_state.json").read_text())
    ranks = state["sampler"]["per_rank"]
    assert [(r["rank"], r["world_size"], r["position"]) for r in ranks] == [(0, 2, 2), (1, 2, 2)]
