"""Objectives: logits gathered at MASK positions give the full-logits loss; LLaDA's MDM loss."""

import pytest
import torch
import torch.nn.functional as F

from flexretrofit.data import FlexMDMCollator, MDMCollator
from flexretrofit.diffusion import flexmdm_loss
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm, tiny_llada
from flexretrofit.training.objectives import FlexMDMObjective, MDMObjective


@pytest.fixture(scope="module")
def samples():
    tokenizer = build_tiny_tokenizer()
    texts = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n", "0 1 2 3"]
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append({"input_ids": ids, "prompt_mask": [j < i for j in range(len(ids))]})
    return out


def test_flexmdm_objective_equals_the_full_logits_loss(samples):
    model = tiny_flexmdm(seed=0, insertion_head_init=0.5)
    config = model.config
    collator = FlexMDMCollator(
        config.pad_token_id, config.mask_token_id, config.insertion_schedule, config.unmask_schedule, seed=3
    )
    batch = collator(samples, step=0)
    assert batch["logits_positions"].any()
    objective = FlexMDMObjective(config.insertion_schedule, config.unmask_schedule)
    gathered = objective(model, batch, normalizer=batch["num_loss_tokens"])

    # The published way: logits at every position, then pick the MASK ones.
    out = model(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"])
    full = flexmdm_loss(
        out.logits[batch["logits_positions"]],
        batch["masked_targets"],
        batch["masked_row"],
        out.expected_gaps,
        batch["slot_gaps"],
        batch["slot_valid"],
        batch["t"],
        config.insertion_schedule,
        config.unmask_schedule,
        normalizer=batch["num_loss_tokens"],
    )
    torch.testing.assert_close(gathered.loss, full.loss)
    torch.testing.assert_close(gathered.parts["unmask_loss"], full.unmask_loss)
    torch.testing.assert_close(gathered.parts["insertion_loss"], full.insertion_loss)


def test_flexmdm_objective_divides_by_the_given_normalizer(samples):
    model = tiny_flexmdm(seed=0)
    config = model.config
    collator = FlexMDMCollator(
        config.pad_token_id, config.mask_token_id, config.insertion_schedule, config.unmask_schedule, seed=3
    )
    batch = collator(samples, step=0)
    objective = FlexMDMObjective(config.insertion_schedule, config.unmask_schedule)
    sums = objective(model, batch, normalizer=1.0).loss
    torch.testing.assert_close(objective(model, batch, normalizer=40.0).loss, sums / 40.0)


def test_mdm_objective_is_llada_loss(samples):
    llada = tiny_llada(seed=0)
    collator = MDMCollator(llada.config.pad_token_id, llada.config.mask_token_id, seed=5)
    batch = collator(samples, step=0)
    out = MDMObjective()(llada, batch, normalizer=batch["num_loss_tokens"])

    logits = llada(batch["xt"], attention_mask=batch["xt_attention_mask"]).logits  # [B, L, V]
    masked = batch["logits_positions"]
    t = batch["t"][:, None].expand_as(masked)[masked]
    expected = (F.cross_entropy(logits[masked], batch["masked_targets"], reduction="none") / t).sum()
    expected = expected / batch["non_prompt_lengths"].sum()
    torch.testing.assert_close(out.loss, expected)
    assert out.parts == {"unmask_loss": out.loss.detach()}
