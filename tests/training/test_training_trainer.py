"""Trainer: one normalisation under accumulation, exact resume (planned stop and real crash), logs, eval."""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from training_runs import make_trainer, tiny_config, train_losses

from flexretrofit.training import (
    ConfigError,
    Trainer,
    build_accelerator,
    list_checkpoints,
    read_log,
    validate_config,
)
from flexretrofit.training.progress import ProgressBar

REPO = Path(__file__).resolve().parents[2]


def trained_weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


# -- loss normalisation ------------------------------------------------------------------------


def rows(batch, start, stop):
    """Rows [start, stop) of a collated FlexMDM batch (the MASK-position tensors re-indexed)."""
    keep = (batch["masked_row"] >= start) & (batch["masked_row"] < stop)
    part = {
        k: batch[k][start:stop]
        for k in (
            "xt",
            "xt_attention_mask",
            "t",
            "logits_positions",
            "slot_gaps",
            "slot_valid",
            "non_prompt_lengths",
        )
    }
    part["masked_targets"] = batch["masked_targets"][keep]
    part["masked_row"] = batch["masked_row"][keep] - start
    part["num_loss_tokens"] = part["non_prompt_lengths"].sum()
    return part


def step_with_captured_gradients(trainer, micro_batches):
    """Run one train_step; return its metrics and the (clipped) gradients the optimizer stepped with."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    captured = {}

    def capture(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                captured[names[id(p)]] = p.grad.detach().clone()

    handle = trainer.optimizer.optimizer.register_step_pre_hook(capture)
    metrics = trainer.train_step(micro_batches)
    handle.remove()
    return metrics, captured


def test_accumulation_2x2_equals_one_micro_batch_of_4(tiny, tmp_path):
    common = {"lora.dropout": 0.0, "train.global_batch_size": 4, "eval.num_samples": 0}
    single = make_trainer(tiny_config(tiny, tmp_path / "a", **common, **{"train.micro_batch_size": 4}))
    assert single.accumulation == 1
    samples = [single.train_dataset[i] for i in (0, 1, 5, 9)]
    batch = single.collators[0].noise(single.collators[0].pad(samples), step=0)
    halves = [rows(batch, 0, 2), rows(batch, 2, 4)]
    # Different token counts per half: a per-micro-batch mean would weight them differently.
    assert int(halves[0]["num_loss_tokens"]) != int(halves[1]["num_loss_tokens"])
    metrics_one, grads_one = step_with_captured_gradients(single, [batch])
    weights_one = trained_weights(single)

    accumulated = make_trainer(tiny_config(tiny, tmp_path / "b", **common, **{"train.micro_batch_size": 2}))
    assert accumulated.accumulation == 2
    metrics_two, grads_two = step_with_captured_gradients(accumulated, halves)
    weights_two = trained_weights(accumulated)

    assert metrics_one["loss_tokens"] == metrics_two["loss_tokens"] == int(batch["num_loss_tokens"])
    for key in ("loss", "unmask_loss", "insertion_loss", "grad_norm"):
        assert metrics_two[key] == pytest.approx(metrics_one[key], rel=1e-5), key
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 0
    for name in grads_one:
        torch.testing.assert_close(grads_two[name], grads_one[name], atol=1e-6, rtol=1e-4, msg=name)
    for name in weights_one:
        torch.testing.assert_close(weights_two[name], weights_one[name], atol=1e-6, rtol=1e-5, msg=name)


# -- resume ------------------------------------------------------------------------------------

RUN = {"train.max_steps": 6, "train.save_every": 3, "eval.every": 3}


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    trainer = make_trainer(tiny_config(tiny, out, **RUN))
    trainer.train()
    return out, train_losses(out), trained_weights(trainer)


def test_stop_and_resume_continues_exactly(tiny, tmp_path, uninterrupted):
    _, losses, weights = uninterrupted
    first = make_trainer(tiny_config(tiny, tmp_path, **RUN, **{"train.stop_at_step": 3}))
    first.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003"]
    state = json.loads((list_checkpoints(tmp_path)[0] / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["sampler"]["position"] == 3

    resumed = make_trainer(tiny_config(tiny, tmp_path, **RUN, **{"train.resume_from": "latest"}))
    resumed.train()
    assert train_losses(tmp_path) == losses  # steps 1-3 from the first run, 4-6 after resuming: bit-identical
    resumed_weights = trained_weights(resumed)
    for name, value in weights.items():
        torch.testing.assert_close(resumed_weights[name], value, atol=0, rtol=0, msg=name)
    evals = read_log(tmp_path / "log.jsonl", "eval")
    reference = read_log(uninterrupted[0] / "log.jsonl", "eval")
    assert [e["eval_loss"] for e in evals] == [e["eval_loss"] for e in reference]


CRASHING_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from training_runs import make_trainer, tiny_config
from pathlib import Path
config = tiny_config((Path({root!r}), {{"corpus": {corpus!r}}}), {out!r}, **{changes!r})

def crash(trainer, metrics):
    if trainer.step == 5:  # after the step-3 checkpoint, before the next one: no cleanup, no save
        os.kill(os.getpid(), signal.SIGKILL)

make_trainer(config, callbacks=[crash]).train()
"""


def test_resume_after_a_real_crash(tiny, tmp_path, uninterrupted):
    root, data = tiny
    script = CRASHING_RUN.format(
        tests=str(Path(__file__).parent),
        root=str(root),
        out=str(tmp_path),
        changes=RUN,
        corpus=str(data["corpus"]),
    )
    # Same intra-op thread count as this process (tests/conftest.py): bit-exact resume needs the same kernels.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, timeout=120
    )
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003"]
    assert max(train_losses(tmp_path)) == 5  # it died after logging step 5

    resumed = make_trainer(tiny_config(tiny, tmp_path, **RUN, **{"train.resume_from": "latest"}))
    resumed.train()
    resume = read_log(tmp_path / "log.jsonl", "resume")
    assert [r["step"] for r in resume] == [3]
    after = [r for r in read_log(tmp_path / "log.jsonl", "train")][-3:]
    assert [(r["step"], r["loss"]) for r in after] == [(s, uninterrupted[1][s]) for s in (4, 5, 6)]


def test_unfinished_checkpoint_folders_are_never_resumed(tiny, tmp_path, uninterrupted):
    out = uninterrupted[0]
    assert [p.name for p in list_checkpoints(out)] == ["step_0000003", "step_0000006"]
    (out / "checkpoints" / "step_0000009.tmp").mkdir()  # what a crash during a save leaves
    assert list_checkpoints(out)[-1].name == "step_0000006"


# -- logs and evaluation -------------------------------------------------------------------------


def test_log_records_both_loss_parts_throughput_and_layout(uninterrupted):
    out, losses, _ = uninterrupted
    start = read_log(out / "log.jsonl", "start")[0]
    assert start["distributed_type"] == "NO" and start["num_processes"] == 1
    assert start["gradient_accumulation_steps"] == 2 and start["micro_batch_size"] == 4
    for record in read_log(out / "log.jsonl", "train"):
        assert record["loss"] == pytest.approx(record["unmask_loss"] + record["insertion_loss"], rel=1e-6)
        assert record["tokens_per_s"] > 0 and record["tokens"] >= record["loss_tokens"] > 0
        assert (
            record["lr_main"] == record["lr_new_modules"] == (0 if record["step"] == 1 else record["lr_main"])
        )
        assert record["step"] == 1 or record["lr_main"] > 0
    # transformers' warmup then cosine (warmup 25% of 6 = 2 steps): lr 0, half, then the peak, then decay.
    lrs = [r["lr_main"] for r in read_log(out / "log.jsonl", "train")]
    assert (
        lrs[0] == 0.0
        and lrs[1] == pytest.approx(0.5e-3)
        and lrs[2] == pytest.approx(1e-3)
        and lrs[-1] < lrs[2]
    )
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]


def test_eval_loss_is_fixed_for_a_fixed_model(tiny, tmp_path):
    trainer = make_trainer(tiny_config(tiny, tmp_path, **{"eval.num_samples": 8, "eval.batch_size": 3}))
    assert len(trainer.eval_batches) == 3  # 8 samples in batches of 3
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first == second and first["eval_loss"] > 0
    assert first["eval_loss"] == pytest.approx(first["eval_unmask_loss"] + first["eval_insertion_loss"])


# -- output folder, trackers, progress -----------------------------------------------------------


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tiny, uninterrupted):
    out = uninterrupted[0]
    with pytest.raises(ConfigError, match="train.resume_from=latest .*another train.output_dir"):
        validate_config(tiny_config(tiny, out, **RUN), 1)
    accelerator = build_accelerator(tiny_config(tiny, out, **RUN))
    with pytest.raises(
        ConfigError, match="is not empty"
    ):  # the library refuses it too, before writing anything
        Trainer(tiny_config(tiny, out, **RUN), accelerator, None, None)
    validate_config(tiny_config(tiny, out, **RUN, **{"train.resume_from": "latest"}), 1)  # resuming is fine


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_tensorboard_metrics_and_a_progress_bar(tiny, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    config = tiny_config(
        tiny,
        tmp_path,
        **{"train.max_steps": 2, "train.save_every": None, "eval.every": 1, "train.report_to": "tensorboard"},
    )
    trainer = make_trainer(config)
    trainer.train()
    trainer.accelerator.end_training()
    bar = terminal.getvalue()
    assert "2/2" in bar and "loss=" in bar and "<" in bar  # steps, loss and the elapsed<remaining (ETA) field
    runs = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(runs[0].parent))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert losses == pytest.approx(list(train_losses(tmp_path).values()), rel=1e-6)
    assert [e.step for e in events.Scalars("eval_loss")] == [1, 2]


def test_no_progress_bar_off_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(3, stream=stream)
    bar.update({"loss": 1.0})
    bar.close()
    assert stream.getvalue() == ""
    forced = io.StringIO()
    bar = ProgressBar(3, initial=1, stream=forced, force=True)
    bar.update({"loss": 1.5, "lr_main": 1e-3})
    bar.close()
    assert (
        "2/3" in forced.getvalue()
        and "loss=1.5000" in forced.getvalue()
        and "lr=1.00e-03" in forced.getvalue()
    )


# -- divergence: bad numbers never train, a non-finite loss stops the run ---------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("optim.lr", float("nan")),
        ("optim.lr", float("inf")),
        ("optim.lr", -1.0),
        ("optim.max_grad_norm", float("nan")),
        ("optim.new_module_lr", float("nan")),
        ("optim.weight_decay", -0.1),
        ("optim.betas", [0.9, 1.5]),
    ],
)
def test_optimiser_numbers_that_cannot_train_are_refused(tiny, tmp_path, key, value):
    config = tiny_config(tiny, tmp_path / "run", **{key: value})
    with pytest.raises(ConfigError, match=key.split(".")[1].replace("betas", r"betas\[1\]")):
        validate_config(config)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    from flexretrofit.models import load_pretrained
    from flexretrofit.training import TrainingDiverged

    config = tiny_config(tiny, tmp_path / "run", **{"train.max_steps": 6, "train.save_every": 2})

    def poison(trainer, metrics):  # after step 3, one weight becomes NaN: step 4's loss is NaN
        if trainer.step == 3:
            with torch.no_grad():
                next(p for p in trainer.model.parameters() if p.requires_grad).fill_(float("nan"))

    trainer = make_trainer(config, callbacks=[poison])
    with pytest.raises(TrainingDiverged, match="step 4: the loss is not finite.*step_0000002"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002"]
    assert not (tmp_path / "run" / "final").exists()
    with pytest.raises(TrainingDiverged, match="weight"):
        trainer.export()
    assert not (tmp_path / "run" / "final").exists()
    resumed = make_trainer(
        tiny_config(tiny, tmp_path / "run", **{"train.max_steps": 6, "train.resume_from": "latest"})
    )
    resumed.train()
    assert all(torch.isfinite(p).all() for p in resumed.model.parameters())
    exported = load_pretrained(resumed.export())
    assert all(torch.isfinite(p).all() for p in exported.parameters())


def test_a_diverged_recipe_run_is_one_line_and_exit_status_3(capsys):
    from flexretrofit.training import TrainingDiverged, run_recipe

    def diverge(argv):
        raise TrainingDiverged("training stopped at step 4: the loss is not finite")

    assert run_recipe(diverge, []) == 3
    assert capsys.readouterr().err == "error: training stopped at step 4: the loss is not finite\n"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(step=999), "step 999, outside"),
        (lambda s: s.update(step=-3), "step -3, outside"),
        (lambda s: s.update(step=1), "folder is step_0000002"),
        (lambda s: s["scheduler"].update(last_epoch=5), "schedule is at step 5"),
        (lambda s: s["sampler"].update(position=10**12), "sampler position 1000000000000, outside"),
        (
            lambda s: s["sampler"].update(epoch=10**30),
            "sampler epoch 1000000000000000000000000000000, outside",
        ),
        (lambda s: s["sampler"].update(position="3"), "sampler position '3', outside"),
    ],
)
def test_a_hand_edited_trainer_state_is_refused_with_one_line(tiny, tmp_path, edit, message):
    config = tiny_config(tiny, tmp_path / "run", **{"train.max_steps": 2})
    make_trainer(config).train()
    state_file = list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json"
    state = json.loads(state_file.read_text())
    edit(state)
    state_file.write_text(json.dumps(state))
    resumed = tiny_config(tiny, tmp_path / "run", **{"train.max_steps": 12, "train.resume_from": "latest"})
    with pytest.raises(ConfigError, match=message) as error:
        make_trainer(resumed).train()
    assert "\n" not in str(error.value)


# -- one run per output_dir ------------------------------------------------------------------------

# run_lock.py is standard library only; loaded by its path, the holder starts without the package's
# torch and transformers imports (~6 s).
HOLD_LOCK = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
run_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
run_lock.lock_output_dir(sys.argv[2])
print("locked", flush=True)
time.sleep(120)
"""


def test_the_output_dir_lock_is_refused_to_a_second_process_and_freed_at_exit(tmp_path):
    from flexretrofit import run_lock
    from flexretrofit.run_lock import OutputDirBusy, lock_output_dir, release_output_dir

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, run_lock.__file__, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirBusy) as error:
            lock_output_dir(tmp_path / "run")
        assert str(error.value) == (
            f"another run is using {tmp_path / 'run'} (pid {holder.pid}); wait for it or choose another output_dir."
        )
    finally:
        holder.kill()
        holder.wait()
    lock_output_dir(tmp_path / "run")  # a killed run leaves no stale lock
    lock_output_dir(tmp_path / "run")  # and this process may take its own lock again
    release_output_dir(tmp_path / "run")


def test_a_second_run_on_a_busy_output_dir_is_one_line_and_exit_2(tiny, tmp_path, capsys):
    import fcntl

    from flexretrofit.run_lock import OutputDirBusy, lock_path
    from flexretrofit.training import run_recipe

    out = tmp_path / "run"
    out.mkdir()
    with open(lock_path(out), "w") as other:  # another run's lock (a separate open file: flock conflicts)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("4242\n")
        other.flush()
        config = tiny_config(tiny, out, **{"train.max_steps": 2})
        with pytest.raises(OutputDirBusy, match=r"another run is using .*run \(pid 4242\); wait for it"):
            make_trainer(config).train()
        assert run_recipe(lambda argv: make_trainer(config).train(), []) == 2
        err = capsys.readouterr().err  # after the model-loading progress bars: one line, no traceback
        assert (
            err.strip().splitlines()[-1].startswith("error: another run is using") and "Traceback" not in err
        )
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # nothing trained, nothing written
    make_trainer(config).train()  # once free, a fresh run may start in a folder holding only the lock
    assert (out / "checkpoints" / "step_0000002").is_dir()
