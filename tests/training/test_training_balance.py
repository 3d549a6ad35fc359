"""data.balance=tokens in the trainer: the same losses and weights as the fixed layout, exact resume, and
config checks. (Two processes: tests/test_training_distributed.py and tests/test_training_streaming.py.)"""

import pytest
import torch
from training_runs import make_trainer, tiny_config, train_losses

from flexretrofit.training import ConfigError, validate_config

# Micro-batches of 2 rows, 4 accumulation slots: enough rows to regroup. No dropout: its masks follow
# micro-batches, so only without it is the balanced run the same computation as the fixed one.
RUN = {
    "train.max_steps": 4,
    "train.save_every": 2,
    "train.global_batch_size": 8,
    "train.micro_batch_size": 2,
    "eval.every": 2,
    "lora.dropout": 0.0,
}
BALANCED = {"data.balance": "tokens"}


def weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def record_micro_batches(trainer):
    """Wrap train_step to keep (rows, width) of every micro-batch it is given."""
    shapes, step = [], trainer.train_step

    def recording(micro_batches, num_tokens=0):
        shapes.append([tuple(b["xt"].shape) for b in micro_batches])
        return step(micro_batches, num_tokens)

    trainer.train_step = recording
    return shapes


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    fixed = make_trainer(tiny_config(tiny, tmp_path_factory.mktemp("fixed"), **RUN))
    fixed_shapes = record_micro_batches(fixed)
    fixed.train()
    balanced = make_trainer(tiny_config(tiny, tmp_path_factory.mktemp("balanced"), **RUN, **BALANCED))
    balanced_shapes = record_micro_batches(balanced)
    balanced.train()
    return (fixed, fixed_shapes), (balanced, balanced_shapes)


def test_balanced_micro_batches_differ_from_the_fixed_layout(runs):
    (_, fixed_shapes), (_, balanced_shapes) = runs
    assert all(rows == 2 for step in fixed_shapes for rows, _ in step)
    assert len(balanced_shapes) == 4 and all(len(step) == 4 for step in balanced_shapes)  # 4 forwards a step
    assert all(sum(rows for rows, _ in step) == 8 for step in balanced_shapes)  # every row, once
    assert any(rows != 2 for step in balanced_shapes for rows, _ in step)  # regrouped, not the same layout


def test_balanced_training_computes_what_the_fixed_layout_does(runs):
    (fixed, _), (balanced, _) = runs
    expected = {r["step"]: r for r in _train_records(fixed)}
    got = {r["step"]: r for r in _train_records(balanced)}
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    for step, record in got.items():
        assert (record["loss_tokens"], record["tokens"]) == (
            expected[step]["loss_tokens"],
            expected[step]["tokens"],
        )
        for key in ("loss", "unmask_loss", "insertion_loss", "grad_norm"):
            assert record[key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-7), (step, key)
    fixed_weights, balanced_weights = weights(fixed), weights(balanced)
    for name, value in fixed_weights.items():
        torch.testing.assert_close(balanced_weights[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_a_balanced_run_resumes_exactly(tiny, tmp_path, runs):
    (_, _), (balanced, _) = runs
    first = make_trainer(tiny_config(tiny, tmp_path, **RUN, **BALANCED, **{"train.stop_at_step": 2}))
    first.train()
    resumed = make_trainer(tiny_config(tiny, tmp_path, **RUN, **BALANCED, **{"train.resume_from": "latest"}))
    resumed.train()
    assert train_losses(tmp_path) == train_losses(balanced.output_dir)  # bit-identical
    uninterrupted, after = weights(balanced), weights(resumed)
    for name, value in uninterrupted.items():
        torch.testing.assert_close(after[name], value, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.max_tokens_per_micro_batch": 48, **BALANCED}, r"below train.micro_batch_size x .* use >= 98"),
        ({"data.max_tokens_per_micro_batch": 200}, "set data.balance=tokens"),
        ({"data.balance": "rows"}, "data.balance"),
    ],
)
def test_settings_that_cannot_balance_are_refused(tiny, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(tiny_config(tiny, tmp_path, **RUN, **changes))


def test_a_raised_token_cap_is_accepted(tiny, tmp_path):
    validate_config(
        tiny_config(tiny, tmp_path, **RUN, **BALANCED, **{"data.max_tokens_per_micro_batch": 400})
    )


def _train_records(trainer):
    from flexretrofit.training import read_log

    return read_log(trainer.output_dir / "log.jsonl", "train")
