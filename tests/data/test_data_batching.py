"""Length-grouped batch sampler: padding, determinism, resume, rank sharding."""

import pytest
import torch

from flexretrofit.data.batching import LengthGroupedBatchSampler, padding_efficiency


@pytest.fixture(scope="module")
def lengths():
    """A fixed synthetic corpus of chunk lengths: long-tailed, capped at 1024 like real chunks."""
    generator = torch.Generator().manual_seed(0)
    raw = torch.exp(5.5 + torch.randn(4000, generator=generator))
    return raw.clamp(8, 1024).long().tolist()


def test_length_grouping_reduces_padding(lengths):
    grouped = list(LengthGroupedBatchSampler(lengths, 16, seed=0))
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    grouped_efficiency = padding_efficiency(lengths, grouped)
    random_efficiency = padding_efficiency(lengths, random_batches)
    assert grouped_efficiency > 0.9
    assert grouped_efficiency > 2 * random_efficiency


def test_epoch_covers_every_sample_once_and_is_seeded(lengths):
    sampler = LengthGroupedBatchSampler(lengths, 16, seed=3)
    first = list(sampler)
    assert sampler.epoch == 1 and len(first) == len(sampler) == len(lengths) // 16
    flat = [i for batch in first for i in batch]
    assert len(flat) == len(set(flat)) == len(first) * 16
    assert all(len(batch) == 16 for batch in first)
    second = list(sampler)
    assert second != first  # a new epoch reshuffles
    assert LengthGroupedBatchSampler(lengths, 16, seed=3).global_batches(1) == second
    assert LengthGroupedBatchSampler(lengths, 16, seed=4).global_batches(0) != first


def test_resume_gives_the_same_remaining_batches(lengths):
    reference = LengthGroupedBatchSampler(lengths, 8, seed=1)
    reference.set_epoch(2)
    expected = list(reference)

    sampler = LengthGroupedBatchSampler(lengths, 8, seed=1)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(37)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["position"] == 37

    resumed = LengthGroupedBatchSampler(lengths, 8, seed=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop's set_epoch must not rewind a resumed position
    assert consumed + list(resumed) == expected
    assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["position"] == 0

    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(lengths, 16, seed=1).load_state_dict(state)


def test_ranks_take_contiguous_slices_of_each_global_batch(lengths):
    world = [LengthGroupedBatchSampler(lengths, 12, seed=5, rank=r, world_size=3) for r in range(3)]
    global_batches = LengthGroupedBatchSampler(lengths, 12, seed=5).global_batches(0)
    per_rank = [list(sampler) for sampler in world]
    assert all(len(batches) == len(global_batches) for batches in per_rank)
    for step, batch in enumerate(global_batches):
        assert per_rank[0][step] + per_rank[1][step] + per_rank[2][step] == batch
        assert all(len(per_rank[r][step]) == 4 for r in range(3))


def test_keep_last_batch_completes_it(lengths):
    sampler = LengthGroupedBatchSampler(lengths[:50], 16, drop_last=False, rank=1, world_size=2)
    batches = list(sampler)
    assert len(batches) == 4 and all(len(batch) == 8 for batch in batches)
    every = {i for batch in sampler.global_batches(0) for i in batch}
    assert every == set(range(50))


def test_bad_arguments_raise_clear_errors(lengths):
    with pytest.raises(ValueError, match="does not divide by world_size"):
        LengthGroupedBatchSampler(lengths, 10, world_size=4, rank=0)
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedBatchSampler(lengths, 8, world_size=2, rank=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        LengthGroupedBatchSampler(lengths, 0)
    with pytest.raises(ValueError, match="no full global batch"):
        LengthGroupedBatchSampler(lengths[:5], 8)


def test_padding_efficiency_counts_padding():
    assert padding_efficiency([4, 4, 2, 1], [[0, 1], [2, 3]]) == pytest.approx(11 / 12)
    with pytest.raises(ValueError):
        padding_efficiency([1, 2], [[]])
