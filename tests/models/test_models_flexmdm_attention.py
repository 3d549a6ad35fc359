"""FlexMDM attention without a dense per-query mask: same outputs and gradients, cheaper kernels.

The reference below is the former implementation, written out: a dense ``[B, L+1, L+1]`` mask (every query
sees the real tokens, the end slot also sees itself) and the AdaLN modulation applied after each norm.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from flexretrofit.models.llada import apply_rotary, attention_pattern, rotary_cos_sin
from flexretrofit.testing import tiny_flexmdm


def perturbed_model(seed=0, attn="sdpa"):
    """A tiny FlexMDM whose AdaLN and insertion head are not zero, so both are exercised."""
    model = tiny_flexmdm(seed=seed, insertion_head_init=0.8)
    model.config._attn_implementation = attn
    model.backbone.config._attn_implementation = attn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.adaln.groups:
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=gen))
        head = model.insertion_head.out
        head.weight.copy_(0.05 * torch.randn(head.weight.shape, generator=gen))
    return model


def rms(x, weight, eps):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def reference_forward(model, ids, t, mask):
    """The dense-mask implementation: returns (logits [B, L, V], expected_gaps [B, L+1], hidden [B, L+1, d])."""
    config, bc = model.config, model.config.backbone_config
    batch, length = ids.shape
    lengths = mask.sum(1)
    positions = torch.arange(length + 1)
    ext_ids = torch.cat([ids, ids.new_full((batch, 1), config.pad_token_id)], dim=1)
    ext_ids = ext_ids.scatter(1, lengths[:, None], config.end_slot_token_id)
    key_is_token = torch.cat([mask, mask.new_zeros(batch, 1)], dim=1)
    is_slot = positions[None] == lengths[:, None]
    pair_mask = key_is_token[:, None, :] | (is_slot[:, :, None] & is_slot[:, None, :])  # [B, L+1, L+1]
    modulation = model.adaln(model.time_embedding(t))
    transformer = model.backbone.model.transformer
    x = transformer.wte(ext_ids)
    cos, sin = rotary_cos_sin(length + 1, bc.head_dim, bc.rope_theta, x.device)
    for i, block in enumerate(transformer.blocks):
        m = modulation[:, i]
        h = rms(x, block.attn_norm.weight, bc.rms_norm_eps) * (1 + m[:, 0, None]) + m[:, 1, None]
        q, k, v = (
            proj(h).view(batch, length + 1, bc.n_heads, bc.head_dim).transpose(1, 2)
            for proj in (block.q_proj, block.k_proj, block.v_proj)
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) * bc.head_dim**-0.5
        scores = scores.masked_fill(~pair_mask[:, None], torch.finfo(scores.dtype).min)
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length + 1, -1)
        x = x + block.attn_out(att)
        h = rms(x, block.ff_norm.weight, bc.rms_norm_eps) * (1 + m[:, 2, None]) + m[:, 3, None]
        x = x + block.ff_out(F.silu(block.ff_proj(h)) * block.up_proj(h))
    hidden = transformer.ln_f(x)
    logits = transformer.ff_out(hidden[:, :length])
    gaps = model.insertion_head(hidden) * (positions[None] <= lengths[:, None])
    return logits, gaps, hidden


def batch_of(lengths, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 300, (len(lengths), width), generator=gen)
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    ids[~mask] = 0
    t = torch.rand(len(lengths), generator=gen)
    return ids, t, mask


CASES = {"unpadded": ([9, 9, 9], 9), "padded": ([9, 4, 7], 9), "padded_wide": ([3, 6], 11)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_gradients_equal_the_dense_mask_implementation(attn, case):
    lengths, width = CASES[case]
    ids, t, mask = batch_of(lengths, width)
    results = []
    for run in ("model", "reference"):
        model = perturbed_model(seed=1, attn=attn).train()
        if run == "model":
            out = model(ids, t, mask)
            logits, gaps, hidden = out.logits, out.expected_gaps, out.last_hidden_state
        else:
            logits, gaps, hidden = reference_forward(model, ids, t, mask)
        (logits[mask].logsumexp(-1).mean() + gaps.sum() + hidden.square().mean()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((logits, gaps, hidden, grads))
    (logits, gaps, hidden, grads), (ref_logits, ref_gaps, ref_hidden, ref_grads) = results
    # Every position, padding included, matches the dense-mask computation.
    torch.testing.assert_close(hidden, ref_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gaps, ref_gaps, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys() and any(n.startswith("adaln") for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def recorded_attention_calls(model, *args, **kwargs):
    """(query length, key length, mask shape or None) of every attention call of one forward."""
    calls = []

    def recording(module, query, key, value, attention_mask, **options):
        calls.append(
            (query.shape[2], key.shape[2], None if attention_mask is None else tuple(attention_mask.shape))
        )
        return sdpa_attention_forward(module, query, key, value, attention_mask, **options)

    AttentionInterface.register("recording_sdpa", recording)
    model.config._attn_implementation = "recording_sdpa"
    model.backbone.config._attn_implementation = "recording_sdpa"
    with torch.no_grad():
        model(*args, **kwargs)
    return calls


def test_no_mask_at_all_when_no_row_is_padded():
    model = perturbed_model(seed=2)
    ids, t, mask = batch_of([8, 8], 8)
    layers = model.config.backbone_config.n_layers
    calls = recorded_attention_calls(model, ids, t, mask)
    # Per layer: the 8 tokens among themselves (SDPA's unmasked fast path), then the slot over all 9 keys.
    assert calls == [(8, 8, None), (1, 9, None)] * layers


def test_padded_rows_use_key_padding_masks_only():
    model = perturbed_model(seed=3)
    ids, t, mask = batch_of([8, 5], 8)
    layers = model.config.backbone_config.n_layers
    calls = recorded_attention_calls(model, ids, t, mask)
    assert calls == [(9, 9, (2, 1, 1, 9)), (1, 9, (2, 1, 1, 9))] * layers


def test_the_plain_backbone_drops_an_all_true_key_padding_mask():
    model = perturbed_model(seed=4)
    ids = torch.randint(10, 300, (2, 6))
    calls = []

    def recording(module, query, key, value, attention_mask, **options):
        calls.append(attention_mask)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **options)

    AttentionInterface.register("recording_plain", recording)
    model.backbone.config._attn_implementation = "recording_plain"
    with torch.no_grad():
        model.backbone(ids, attention_mask=torch.ones(2, 6, dtype=torch.long))
        model.backbone(ids, attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]))
    layers = model.config.backbone_config.n_layers
    assert calls[:layers] == [None] * layers
    assert all(m is not None and m.shape == (2, 1, 1, 6) for m in calls[layers:])


def test_attention_pattern_matches_its_dense_definition_and_holds_no_square_mask():
    lengths, width = torch.tensor([5, 2, 6]), 7
    keys = torch.arange(width)[None] < lengths[:, None]
    private = lengths.clone()
    pattern = attention_pattern(keys, private, width)
    q = torch.arange(width)[None, :, None]
    k = torch.arange(width)[None, None, :]
    dense = (keys & (torch.arange(width)[None] != private[:, None]))[:, None, :] | (
        (q == k) & (q == private[:, None, None])
    )
    rebuilt = pattern.mask[:, 0].expand(-1, width, -1).clone()
    rows = torch.arange(3)
    rebuilt[rows, private] = pattern.private_mask[:, 0, 0]
    assert torch.equal(rebuilt, dense)
    assert pattern.mask.numel() == pattern.private_mask.numel() == 3 * width
    full = attention_pattern(torch.ones(3, width, dtype=torch.bool), torch.full((3,), width - 1), width)
    assert full.private_is_last and full.mask is None and full.private_mask is None
    with pytest.raises(ValueError, match="private_positions must lie in"):
        attention_pattern(keys, torch.tensor([0, 1, width]), width)
    with pytest.raises(ValueError, match="key-padding"):
        attention_pattern(dense, private, width)
