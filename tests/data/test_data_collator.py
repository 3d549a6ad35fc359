"""Collators: padding, protected prompts, global time stratification, determinism, model/loss contract."""

import pytest
import torch

from flexretrofit.data.collator import FlexMDMCollator, MDMCollator, pad_samples
from flexretrofit.data.formats import CodeInfillFormat, FixedCanvasFormat, GSM8KFormat
from flexretrofit.diffusion import flexmdm_loss
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm

GSM8K = {
    "question": "A baker fills 36 jars on Monday and a third as many on Tuesday. How many jars in all?",
    "answer": "On Tuesday she fills 36/3 = <<36/3=12>>12 jars.\nIn total 36+12 = <<36+12=48>>48 jars.\n#### 48",
}
CODE = {
    "instruction": "Write fib.",
    "code": "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def samples(tokenizer):
    """Prompted samples of different lengths and layouts (prefix prompts, infilling, plain text)."""
    gsm8k = GSM8KFormat(tokenizer)(GSM8K)
    infill = [CodeInfillFormat(tokenizer, seed=seed)(CODE) for seed in range(3)]
    text_ids = tokenizer("A masked diffusion model fills in missing tokens.", add_special_tokens=False)[
        "input_ids"
    ]
    plain = {"input_ids": text_ids}  # no prompt_mask: nothing protected
    return [gsm8k, *infill, plain]


def _collator(tokenizer, **kwargs):
    return FlexMDMCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, "linear", "linear", **kwargs)


def test_pad_samples(samples, tokenizer):
    batch = pad_samples(samples, tokenizer.pad_token_id)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["x1"].shape == (len(samples), max(lengths))
    assert batch["x1_attention_mask"].sum(1).tolist() == lengths
    assert batch["prompt_mask"].sum(1).tolist() == [sum(s.get("prompt_mask", [])) for s in samples]
    assert (batch["x1"][~batch["x1_attention_mask"]] == tokenizer.pad_token_id).all()
    with pytest.raises(ValueError, match="prompt_mask"):
        pad_samples([{"input_ids": [1, 2, 3], "prompt_mask": [True]}], 0)
    with pytest.raises(ValueError, match="empty"):
        pad_samples([], 0)


def test_prompt_tokens_are_never_masked_or_deleted(samples, tokenizer):
    collator = _collator(tokenizer, seed=7)
    padded = pad_samples(samples, tokenizer.pad_token_id)
    x1, prompt_mask = padded["x1"], padded["prompt_mask"]
    seen_masks = seen_deletions = 0
    for _ in range(12):
        batch = collator(samples)
        xt, real = batch["xt"], batch["xt_attention_mask"]
        width = xt.shape[1]
        assert batch["slot_gaps"].shape == batch["slot_valid"].shape == (len(samples), width + 1)
        assert width == int(real.sum(1).max())  # trimmed to the longest x_t
        # Rebuild where each x_t token came from: source = position + tokens deleted before it.
        source = torch.arange(width) + batch["slot_gaps"][:, :width].cumsum(1)
        for row in range(len(samples)):
            n = int(real[row].sum())
            rows_source = source[row, :n]
            kept = set(rows_source.tolist())
            prompt_positions = set(prompt_mask[row].nonzero().flatten().tolist())
            assert prompt_positions <= kept, "a prompt token was deleted"
            assert not (batch["logits_positions"][row, :n] & prompt_mask[row][rows_source]).any(), (
                "prompt masked"
            )
            clean = ~batch["logits_positions"][row, :n]
            assert torch.equal(xt[row, :n][clean], x1[row][rows_source][clean])
            assert (xt[row, :n][~clean] == tokenizer.mask_token_id).all()
            seen_deletions += int(real[row].sum() < padded["x1_attention_mask"][row].sum())
        targets = x1.gather(1, source.clamp(max=x1.shape[1] - 1))[batch["logits_positions"]]
        assert torch.equal(batch["masked_targets"], targets)
        assert torch.equal(batch["masked_row"], batch["logits_positions"].nonzero()[:, 0])
        seen_masks += int(batch["logits_positions"].sum())
        assert int(batch["num_loss_tokens"]) == int((padded["x1_attention_mask"] & ~prompt_mask).sum())
    assert seen_masks > 0 and seen_deletions > 0  # the check above was not vacuous


def test_times_are_stratified_across_ranks_and_steps(samples, tokenizer):
    per_rank = [_collator(tokenizer, seed=1, rank=r, world_size=2) for r in range(2)]
    times = torch.cat([collator(samples[:4])["t"] for collator in per_rank])  # the global batch of 8
    gaps = times.sort().values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - 1e-3) / 8), atol=1e-5)
    later = per_rank[0](samples[:4])["t"]
    assert not torch.allclose(later, times[:4])  # a new step draws new times


def test_same_seed_and_step_give_the_same_batch(samples, tokenizer):
    first = _collator(tokenizer, seed=2)
    a = [first(samples) for _ in range(3)]
    resumed = _collator(tokenizer, seed=2)
    resumed.load_state_dict({"step": 2, "seed": 2})
    b = resumed(samples)
    assert all(torch.equal(a[2][key], b[key]) for key in a[2])
    c = _collator(tokenizer, seed=2).noise(pad_samples(samples, tokenizer.pad_token_id), step=1)
    assert all(torch.equal(a[1][key], c[key]) for key in a[1])
    assert not torch.equal(a[0]["t"], a[1]["t"])


def test_batch_feeds_the_model_and_loss(samples, tokenizer):
    model = tiny_flexmdm(tokenizer)
    collator = FlexMDMCollator(
        model.config.pad_token_id, model.config.mask_token_id, model.insertion_schedule, model.unmask_schedule
    )
    batch = collator(samples)
    out = model(
        batch["xt"],
        batch["t"],
        attention_mask=batch["xt_attention_mask"],
        logits_positions=batch["logits_positions"],
    )
    assert out.logits.shape[0] == batch["masked_targets"].shape[0]
    assert out.expected_gaps.shape == batch["slot_gaps"].shape
    loss = flexmdm_loss(
        out.logits,
        batch["masked_targets"],
        batch["masked_row"],
        out.expected_gaps,
        batch["slot_gaps"],
        batch["slot_valid"],
        batch["t"],
        model.insertion_schedule,
        model.unmask_schedule,
        normalizer=batch["num_loss_tokens"],
    )
    assert torch.isfinite(loss.loss) and loss.loss > 0


def test_mdm_collator_masks_only_the_response_on_a_fixed_canvas(tokenizer):
    eos = tokenizer.eos_token_id
    canvas = FixedCanvasFormat(GSM8KFormat(tokenizer), eos, total_length=256)
    samples = [canvas(GSM8K)] * 4
    prompt_mask = torch.tensor(samples[0]["prompt_mask"])
    collator = MDMCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, seed=0)
    masked_eos = 0
    for _ in range(5):
        batch = collator(samples)
        masked = batch["logits_positions"]
        assert batch["xt"].shape == (4, 256) and batch["xt_attention_mask"].all()
        assert not masked[:, prompt_mask].any()
        assert (batch["xt"][masked] == tokenizer.mask_token_id).all()
        assert torch.allclose(batch["masked_weights"], 1 / batch["t"][batch["masked_row"]])
        # Each row masks about a fraction t of its response.
        fraction = masked.sum(1) / (~prompt_mask).sum()
        assert torch.allclose(fraction, batch["t"], atol=0.2)
        masked_eos += int((batch["masked_targets"] == eos).sum())
        assert int(batch["num_loss_tokens"]) == 4 * int((~prompt_mask).sum())
    assert masked_eos > 0  # the EOS padding is trained


def test_bad_ids_raise(tokenizer):
    with pytest.raises(ValueError, match="must differ"):
        FlexMDMCollator(3, 3, "linear", "linear")
    with pytest.raises(ValueError, match="rank"):
        MDMCollator(0, 1, rank=2, world_size=2)
