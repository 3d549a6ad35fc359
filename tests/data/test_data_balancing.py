"""Cost-balanced micro-batches: rows move between forward passes unchanged, every row lands once, the costliest
micro-batch gets cheaper, and the loss and gradients of a step are those of the fixed layout (fp64)."""

import pytest
import torch

from flexretrofit.data import FlexMDMCollator, MDMCollator
from flexretrofit.data.balancing import (
    MicroBatchCost,
    assign_groups,
    balance_micro_batches,
    balanced_groups,
    collate_rows,
    split_rows,
)
from flexretrofit.models import FlexMDMConfig, LLaDAConfig
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm, tiny_llada
from flexretrofit.training.objectives import FlexMDMObjective, MDMObjective

COST = MicroBatchCost(attention_width=64.0)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _samples(count, seed=0, max_length=40):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_length, (count,), generator=generator).tolist()
    samples = []
    for length in lengths:
        ids = torch.randint(10, 300, (length,), generator=generator).tolist()
        prompt = [i < length // 4 for i in range(length)]
        samples.append({"input_ids": ids, "prompt_mask": prompt})
    return samples


def _fixed_layout(collator_class, tokenizer, samples, slots, step=3, **kwargs):
    """Today's layout: slot s noises rows [s * micro, (s + 1) * micro) with its stratum of the time grid."""
    micro = len(samples) // slots
    ids = dict(pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
    batches = []
    for slot in range(slots):
        collator = collator_class(**ids, **kwargs, rank=slot, world_size=slots, seed=7)
        batches.append(collator.noise(collator.pad(samples[slot * micro : (slot + 1) * micro]), step))
    return batches


def _balanced(batches, slots, processes, pad_token_id, max_tokens=None):
    rows = [row for batch in batches for row in split_rows(batch)]
    groups = balanced_groups([len(row["xt"]) for row in rows], slots, COST, max_tokens)
    micro_batches = [collate_rows([rows[i] for i in group], pad_token_id) for group in groups]
    return rows, groups, micro_batches


def _flex_kwargs():
    return dict(insertion_schedule="linear", unmask_schedule="linear")


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_split_then_collate_gives_the_micro_batch_back(kind, tokenizer):
    collator_class, kwargs = (FlexMDMCollator, _flex_kwargs()) if kind == "flexmdm" else (MDMCollator, {})
    (batch,) = _fixed_layout(collator_class, tokenizer, _samples(8), slots=1, **kwargs)
    again = collate_rows(split_rows(batch), tokenizer.pad_token_id)
    assert set(again) == set(batch)
    for name, value in batch.items():
        assert torch.equal(again[name], value), name


def test_every_row_lands_once_in_contiguous_width_runs_and_the_costliest_gets_cheaper(tokenizer):
    samples = _samples(64, seed=1)
    batches = _fixed_layout(FlexMDMCollator, tokenizer, samples, slots=8, **_flex_kwargs())
    rows, groups, micro_batches = _balanced(batches, 8, 4, tokenizer.pad_token_id)
    assert len(groups) == 8 and all(groups)
    assert sorted(i for group in groups for i in group) == list(range(64))
    widths = [len(row["xt"]) for row in rows]
    spans = [(min(widths[i] for i in g), max(widths[i] for i in g)) for g in groups]
    for (low, _), (_, high) in zip(spans, spans[1:]):  # groups follow one another in width order
        assert high <= low
    fixed = max(COST(b["xt"].shape[0], b["xt"].shape[1] + 1) for b in batches)
    balanced = [COST(b["xt"].shape[0], b["xt"].shape[1] + 1) for b in micro_batches]
    assert max(balanced) < 0.8 * fixed
    assert max(balanced) / (sum(balanced) / len(balanced)) < 1.3


def test_the_token_cap_bounds_every_micro_batch_and_bad_caps_are_refused():
    widths = [30, 29, 5, 4, 4, 3, 3, 2, 2, 1, 1, 1]
    groups = balanced_groups(widths, 4, COST, max_tokens=40)
    assert all(len(g) * (max(widths[i] for i in g) + 1) <= 40 for g in groups)
    with pytest.raises(ValueError, match="above the micro-batch token cap of 20.*max_tokens_per_micro_batch"):
        balanced_groups(widths, 4, COST, max_tokens=20)
    with pytest.raises(ValueError, match="do not fit into 2 micro-batches of at most 31 tokens"):
        balanced_groups(widths, 2, COST, max_tokens=31)
    with pytest.raises(ValueError, match="cannot fill 13 micro-batches"):
        balanced_groups(widths, 13, COST)


def test_groups_are_dealt_evenly_over_processes():
    costs = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0]
    dealt = assign_groups(costs, 4)
    assert [len(d) for d in dealt] == [2, 2, 2, 2]
    assert sorted(g for d in dealt for g in d) == list(range(8))
    totals = [sum(costs[g] for g in d) for d in dealt]
    assert max(totals) - min(totals) <= 2.0  # snake order: 9+1, 8+2, 7+3, 6+4
    with pytest.raises(ValueError, match="do not split evenly"):
        assign_groups(costs, 3)


def test_the_cost_model_of_llada_8b_makes_attention_a_small_term_at_1024():
    cost = MicroBatchCost.for_model(LLaDAConfig())
    assert 10_000 < cost.attention_width < 30_000
    assert cost(1, 1024) / (1024 * 1.0) < 1.1
    # A FlexMDM is costed by its backbone.
    assert MicroBatchCost.for_model(FlexMDMConfig(backbone_config=LLaDAConfig().to_dict())) == cost


def _step_loss_and_grads(model, objective, micro_batches):
    """One step's loss and gradients as the trainer computes them: one global normaliser for all."""
    model.zero_grad()
    normalizer = torch.tensor(
        float(sum(int(b["num_loss_tokens"]) for b in micro_batches)), dtype=torch.float64
    )
    total = 0.0
    for batch in micro_batches:
        out = objective(model, batch, normalizer)
        out.loss.backward()
        total += float(out.loss.detach())
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, grads


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_balanced_micro_batches_give_the_same_loss_and_gradients_in_fp64(kind, tokenizer):
    torch.manual_seed(0)
    if kind == "flexmdm":
        model = tiny_flexmdm(tokenizer, seed=0).double().train()
        objective = FlexMDMObjective(model.config.insertion_schedule, model.config.unmask_schedule)
        batches = _fixed_layout(FlexMDMCollator, tokenizer, _samples(16, seed=2), slots=4, **_flex_kwargs())
    else:
        model = tiny_llada(tokenizer, seed=0).double().train()
        objective = MDMObjective()
        batches = _fixed_layout(MDMCollator, tokenizer, _samples(16, seed=2), slots=4)
    for batch in batches:
        batch["t"] = batch["t"].double()
    balanced, held = [], []  # what each of 2 processes runs, as the trainer calls it
    for rank in range(2):
        mine, rows = balance_micro_batches(batches, 2, rank, COST, None, tokenizer.pad_token_id)
        assert len(mine) == 2  # every process runs the same number of forward passes
        balanced, held = balanced + mine, held + rows
    assert sorted(held) == list(range(16))  # every row once
    assert [b["xt"].shape for b in balanced] != [b["xt"].shape for b in batches]  # really regrouped
    fixed_loss, fixed_grads = _step_loss_and_grads(model, objective, batches)
    balanced_loss, balanced_grads = _step_loss_and_grads(model, objective, balanced)
    assert balanced_loss == pytest.approx(fixed_loss, rel=1e-12, abs=1e-12)
    assert fixed_grads.keys() == balanced_grads.keys() and fixed_grads
    for name, grad in fixed_grads.items():
        torch.testing.assert_close(balanced_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)
