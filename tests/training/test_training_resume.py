"""The resume state of a run: what trainer_state.json holds besides weights, and the checks that it fits."""

from pathlib import Path

import pytest
import torch

from flexretrofit.data import LengthGroupedBatchSampler
from flexretrofit.training import ConfigError
from flexretrofit.training.resume import check_batch_layout, jsonable, load_sampler_state, sampler_state

CHECKPOINT = Path("runs/x/checkpoints/step_0000003")


def test_another_split_of_the_same_global_batch_resumes():
    state = {"world_size": 2, "micro_batch_size": 4, "gradient_accumulation_steps": 1}
    check_batch_layout(state, CHECKPOINT, 8)
    with pytest.raises(ConfigError, match=r"resume with train.global_batch_size=8\.$"):
        check_batch_layout(state, CHECKPOINT, 16)


def test_the_sampler_position_round_trips_and_a_wrong_kind_of_state_is_one_line():
    sampler = LengthGroupedBatchSampler([3, 5, 7, 9] * 4, 4, seed=1)
    batches = iter(sampler)
    next(batches)
    saved = sampler_state(sampler, streaming=False)
    again = LengthGroupedBatchSampler([3, 5, 7, 9] * 4, 4, seed=1)
    load_sampler_state(again, saved, CHECKPOINT, streaming=False, world_size=1, rank=0)
    assert next(iter(again)) == next(batches)
    with pytest.raises(ConfigError, match="trained without data.streaming; resume with the same"):
        load_sampler_state(again, saved, CHECKPOINT, streaming=True, world_size=1, rank=0)
    with pytest.raises(ConfigError, match="streamed its data over 2 processes, this run has 1"):
        load_sampler_state(again, {"per_rank": [{}, {}]}, CHECKPOINT, streaming=True, world_size=1, rank=0)


def test_scheduler_state_becomes_plain_json():
    state = {"lr": [0.1, torch.tensor(0.5)], "fn": print, "nested": {"steps": (1, 2)}, "flag": True}
    assert jsonable(state) == {"lr": [0.1, 0.5], "fn": None, "nested": {"steps": [1, 2]}, "flag": True}
