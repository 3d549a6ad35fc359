"""FlexMDMForMaskedDiffusion: retrofit equals its backbone at init, slot outputs, padding, I/O, LoRA."""

import pytest
import torch
from transformers import AutoModel

import flexretrofit  # noqa: F401
from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion
from flexretrofit.models.lora import apply_lora, merge_lora
from flexretrofit.testing import save_tiny_llada_checkpoint, tiny_flexmdm, tiny_llada


def right_padded(rows, pad_id, width=None):
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = torch.as_tensor(row), True
    return ids, mask


def perturb_new_modules(model, seed=0):
    """Give the zero-initialised modulation non-zero weights so time conditioning is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.adaln.groups:
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=gen))
        model.insertion_head.out.weight.copy_(
            0.05 * torch.randn(model.insertion_head.out.weight.shape, generator=gen)
        )


def test_fresh_retrofit_reproduces_backbone_logits():
    model = tiny_flexmdm(seed=0)
    rows = [torch.randint(0, 300, (n,)).tolist() for n in (7, 4)]
    ids, mask = right_padded(rows, model.config.pad_token_id)
    out = model(ids, torch.tensor([0.3, 0.8]), mask)
    backbone = model.backbone(ids, attention_mask=mask).logits
    torch.testing.assert_close(out.logits[mask], backbone[mask], atol=1e-5, rtol=1e-5)


def test_output_shapes_and_slot_predictions():
    model = tiny_flexmdm(seed=1, insertion_head_init=0.5)
    ids, mask = right_padded([[5, 6, 7, 8, 9], [5, 6]], model.config.pad_token_id)
    out = model(ids, torch.tensor([0.2, 0.9]), mask)
    vocab = model.config.backbone_config.embedding_size
    assert out.logits.shape == (2, 5, vocab)
    assert out.expected_gaps.shape == (2, 6)
    assert out.last_hidden_state.shape == (2, 6, model.config.backbone_config.d_model)
    valid = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    assert (out.expected_gaps[valid] > 0).all()
    assert (out.expected_gaps[~valid] == 0).all()
    torch.testing.assert_close(out.expected_gaps[valid], torch.full((9,), 0.5), atol=1e-5, rtol=0)


def test_time_conditioning_changes_predictions_once_trained():
    model = tiny_flexmdm(seed=2)
    perturb_new_modules(model)
    ids = torch.randint(0, 300, (1, 6))
    early, late = model(ids, torch.tensor([0.1])), model(ids, torch.tensor([0.9]))
    assert not torch.allclose(early.logits, late.logits)
    assert not torch.allclose(early.expected_gaps, late.expected_gaps)


def test_more_right_padding_gives_the_same_predictions():
    model = tiny_flexmdm(seed=3)
    perturb_new_modules(model)
    rows = [[11, 12, model.config.mask_token_id, 14], [21, model.config.mask_token_id]]
    t = torch.tensor([0.4, 0.6])
    ids, mask = right_padded(rows, model.config.pad_token_id)
    wide_ids, wide_mask = right_padded(rows, model.config.pad_token_id, width=13)
    narrow, wide = model(ids, t, mask), model(wide_ids, t, wide_mask)
    torch.testing.assert_close(wide.logits[:, :4][mask], narrow.logits[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wide.expected_gaps[:, :5], narrow.expected_gaps, atol=1e-5, rtol=1e-5)
    assert (wide.expected_gaps[:, 5:] == 0).all()


def test_both_sides_insertion_head_reads_the_tokens_around_each_slot():
    model = tiny_flexmdm(seed=5, insertion_head_input="both_sides", insertion_head_init=0.7)
    ids, mask = right_padded([[11, 12, 13, 14, 15]], model.config.pad_token_id)
    fresh = model(ids, torch.tensor([0.5]), mask).expected_gaps
    torch.testing.assert_close(fresh, torch.full((1, 6), 0.7), atol=1e-5, rtol=0)
    perturb_new_modules(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a head whose left half is not zero
        model.insertion_head.proj.weight.copy_(
            0.3 * torch.randn(model.insertion_head.proj.weight.shape, generator=gen)
        )
    hidden = model(ids, torch.tensor([0.5]), mask).last_hidden_state
    changed = hidden.clone()
    changed[:, 2] += torch.randn(hidden.shape[-1], generator=gen)  # left of slot 3, right of slot 2
    base, moved = model.insertion_head(hidden), model.insertion_head(changed)
    differs = ~torch.isclose(base, moved)
    assert differs[0, 2] and differs[0, 3] and not differs[0, [0, 1, 4, 5]].any()
    slot_model = tiny_flexmdm(seed=5)
    perturb_new_modules(slot_model)  # the published head reads position i only
    slot_differs = ~torch.isclose(slot_model.insertion_head(hidden), slot_model.insertion_head(changed))
    assert slot_differs[0, 2] and not slot_differs[0, [0, 1, 3, 4, 5]].any()
    with pytest.raises(ValueError, match="insertion_head_input"):
        FlexMDMConfig(backbone_config=model.config.backbone_config, insertion_head_input="left")


def test_logits_at_requested_positions_equal_the_full_projection():
    model = tiny_flexmdm(seed=4)
    ids, mask = right_padded([[1, 2, 3, 4], [5, 6, 7]], model.config.pad_token_id)
    positions = torch.tensor([[False, True, False, True], [True, False, False, False]])
    t = torch.tensor([0.5, 0.5])
    full, sparse = model(ids, t, mask), model(ids, t, mask, logits_positions=positions)
    assert sparse.logits.shape == (3, full.logits.shape[-1])
    torch.testing.assert_close(sparse.logits, full.logits[positions])


def test_activation_checkpointing_keeps_time_conditioning_gradients():
    ids = torch.randint(0, 300, (2, 7))
    t = torch.tensor([0.3, 0.7])
    grads = []
    for checkpointing in (False, True):
        model = tiny_flexmdm(seed=5).train()
        perturb_new_modules(model)
        if checkpointing:
            model.activation_checkpointing_enable()
        out = model(ids, t)
        (out.logits.logsumexp(-1).mean() + out.expected_gaps.mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(n.startswith("adaln") for n in grads[1]) and any(
        n.startswith("time_embedding") for n in grads[1]
    )
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5)


def test_from_llada_on_published_layout_and_save_load_round_trip(tmp_path):
    folder = save_tiny_llada_checkpoint(tmp_path / "llada", seed=6)
    schedule = {"name": "polynomial", "power": 2.0}
    model = FlexMDMForMaskedDiffusion.from_llada(
        folder, flex_config={"modulation_group_size": 1, "insertion_schedule": schedule}
    )
    reference = tiny_llada(seed=6)
    ids = torch.randint(0, 300, (1, 5))
    torch.testing.assert_close(model(ids, torch.tensor([0.5])).logits, reference(ids).logits)

    perturb_new_modules(model)
    model.save_pretrained(tmp_path / "flex")
    assert (tmp_path / "flex" / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(tmp_path / "flex")
    assert isinstance(loaded, FlexMDMForMaskedDiffusion)
    assert loaded.config.insertion_schedule["name"] == "polynomial"
    assert loaded.config.mask_token_id == reference.config.mask_token_id
    a, b = model(ids, torch.tensor([0.2])), loaded(ids, torch.tensor([0.2]))
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.expected_gaps, b.expected_gaps)


def test_config_defaults_follow_the_published_retrofit():
    config = FlexMDMConfig(backbone_config=tiny_llada().config)
    assert config.insertion_schedule == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert config.unmask_schedule["name"] == "linear"
    assert config.modulation_group_size == 8
    assert config.max_length == config.backbone_config.max_sequence_length - 1
    with pytest.raises(ValueError, match="max_length"):
        FlexMDMConfig(backbone_config=tiny_llada().config, max_length=10_000)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"mask_token_id": 1000000},
            r"FlexMDMConfig.mask_token_id=1000000 is not a token id of the vocabulary",
        ),
        ({"end_slot_token_id": -2}, r"FlexMDMConfig.end_slot_token_id=-2 is not a token id"),
        ({"max_length": 0}, r"FlexMDMConfig.max_length=0 must be a positive integer"),
        ({"modulation_group_size": 0}, r"FlexMDMConfig.modulation_group_size=0 must be a positive integer"),
        ({"insertion_head_init": 0.0}, r"FlexMDMConfig.insertion_head_init=0.0 must be a positive number"),
        (
            {"insertion_head_scale": -1.0},
            r"FlexMDMConfig.insertion_head_scale=-1.0 must be a positive number",
        ),
    ],
)
def test_nonsense_config_values_are_refused_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        FlexMDMConfig(backbone_config=tiny_llada().config, **overrides)
    assert "\n" not in str(error.value)


def lora_layer_names(model):
    return sorted(
        name for name, module in model.named_modules() if hasattr(module, "lora_A") and module.lora_A
    )


def test_lora_wraps_the_intended_modules_only_and_merges(tmp_path):
    model = tiny_flexmdm(seed=7)
    perturb_new_modules(model)
    peft_model = apply_lora(model, "published", r=4, alpha=8, dropout=0.0)
    names = lora_layer_names(peft_model)
    assert len(names) == 2 * 3 + 1  # q/k/v in each of 2 blocks + the LM head
    assert sum(n.endswith("transformer.ff_out") for n in names) == 1
    assert not any(".blocks." in n and n.endswith("ff_out") for n in names)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("insertion_head" in n for n in trainable) and any("adaln" in n for n in trainable)
    assert not any("wte" in n or "ff_norm" in n for n in trainable)

    with torch.no_grad():  # make the adapters non-trivial before merging
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    ids, t = torch.randint(0, 300, (1, 6)), torch.tensor([0.4])
    expected = peft_model(input_ids=ids, t=t)
    merged = merge_lora(peft_model)
    assert isinstance(merged, FlexMDMForMaskedDiffusion) and not lora_layer_names(merged)
    out = merged(ids, t)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.expected_gaps, expected.expected_gaps, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = FlexMDMForMaskedDiffusion.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(reloaded(ids, t).logits, expected.logits, atol=1e-5, rtol=1e-5)


def test_all_linear_preset_covers_llada_names():
    peft_model = apply_lora(tiny_flexmdm(seed=8), "all_linear", r=2, alpha=2, dropout=0.0)
    names = lora_layer_names(peft_model)
    assert len(names) == 2 * 7 + 1
    for module in ("attn_out", "ff_proj", "up_proj", "blocks.1.ff_out"):
        assert any(n.endswith(module) for n in names), module
    with pytest.raises(ValueError, match="unknown LoRA"):
        apply_lora(tiny_flexmdm(seed=8), ["o_proj"])


def test_a_few_optimisation_steps_drive_both_loss_parts_down():
    from flexretrofit.diffusion import flexmdm_loss, masked_positions_and_targets, sample_interpolant

    model = tiny_flexmdm(seed=9).train()
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randint(10, 60, (8, 24), generator=gen)
    real = torch.arange(24)[None] < torch.tensor([24, 20, 16, 12, 24, 20, 16, 12])[:, None]
    x1 = torch.where(real, x1, cfg.pad_token_id)
    prompt = (torch.arange(24)[None] < 3).expand(8, 24)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def step(seed):
        g = torch.Generator().manual_seed(seed)
        t = torch.rand(8, generator=g).clamp(0.05, 0.95)
        sample = sample_interpolant(
            x1,
            real,
            prompt,
            t,
            model.insertion_schedule,
            model.unmask_schedule,
            cfg.mask_token_id,
            cfg.pad_token_id,
            g,
        )
        positions, targets, rows = masked_positions_and_targets(sample)
        out = model(sample.xt, t, sample.xt_attention_mask, logits_positions=positions)
        return flexmdm_loss(
            out.logits,
            targets,
            rows,
            out.expected_gaps,
            sample.slot_gaps,
            sample.slot_valid,
            t,
            model.insertion_schedule,
            model.unmask_schedule,
            non_prompt_lengths=sample.non_prompt_lengths,
        )

    def evaluate():
        with torch.no_grad():
            parts = [step(1000 + i) for i in range(4)]
        return sum(p.unmask_loss for p in parts) / 4, sum(p.insertion_loss for p in parts) / 4

    unmask_before, insertion_before = evaluate()
    for i in range(40):
        optimizer.zero_grad()
        step(i).loss.backward()
        optimizer.step()
    unmask_after, insertion_after = evaluate()
    assert unmask_after < 0.8 * unmask_before
    assert insertion_after < 0.8 * insertion_before


def test_time_conditioned_insertion_head_starts_as_the_plain_head_and_then_reads_t():
    plain = tiny_flexmdm(seed=5, insertion_head_input="both_sides", insertion_head_init=0.7)
    timed = tiny_flexmdm(
        seed=5,
        insertion_head_input="both_sides",
        insertion_head_init=0.7,
        insertion_head_time_conditioning=True,
    )
    ids, mask = right_padded([[11, 12, 13, 14, 15]], plain.config.pad_token_id)
    perturb_new_modules(plain)
    timed.load_state_dict(plain.state_dict(), strict=False)  # everything but the head's modulation
    for t in (0.1, 0.9):
        t = torch.tensor([t])
        torch.testing.assert_close(timed(ids, t, mask).expected_gaps, plain(ids, t, mask).expected_gaps)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        weight = timed.insertion_head.modulation.weight
        weight.copy_(0.5 * torch.randn(weight.shape, generator=gen))
    hidden = timed(ids, torch.tensor([0.5]), mask).last_hidden_state
    early = timed.insertion_head(hidden, timed.time_embedding(torch.tensor([0.1])))
    late = timed.insertion_head(hidden, timed.time_embedding(torch.tensor([0.9])))
    assert not torch.allclose(early, late), "with the same hidden states, the gap now depends on t"
