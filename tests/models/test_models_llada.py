"""The native LLaDA backbone: published layout, exact forward, masks, checkpointing, loading errors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import flexretrofit  # noqa: F401  (registers the Auto classes)
from flexretrofit.models.llada import LLaDAConfig, LLaDAModelLM
from flexretrofit.testing import (
    published_config_dict,
    save_tiny_llada_checkpoint,
    tiny_llada,
    tiny_llada_config,
    write_published_checkpoint,
)

PUBLISHED_8B = dict(
    d_model=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=32,
    mlp_hidden_size=12288,
    vocab_size=126464,
    embedding_size=126464,
    max_sequence_length=4096,
    rope_theta=500000.0,
    mask_token_id=126336,
    pad_token_id=126081,
    eos_token_id=126081,
)


def test_8b_config_on_meta_device_has_the_published_keys_and_size():
    config = LLaDAConfig(**PUBLISHED_8B)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    state = model.state_dict()
    assert len(state) == 291
    assert sum(p.numel() for p in model.parameters()) == 8_015_581_184
    assert state["model.transformer.wte.weight"].shape == (126464, 4096)
    assert state["model.transformer.ff_out.weight"].shape == (126464, 4096)
    assert state["model.transformer.ln_f.weight"].shape == (4096,)
    for i in (0, 31):
        prefix = f"model.transformer.blocks.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "attn_out"):
            assert state[prefix + name + ".weight"].shape == (4096, 4096)
        assert state[prefix + "ff_proj.weight"].shape == (12288, 4096)
        assert state[prefix + "up_proj.weight"].shape == (12288, 4096)
        assert state[prefix + "ff_out.weight"].shape == (4096, 12288)
        assert state[prefix + "attn_norm.weight"].shape == (4096,)
        assert state[prefix + "ff_norm.weight"].shape == (4096,)
    assert not any(k.endswith(".bias") for k in state)


def reference_llada_logits(state: dict, config: LLaDAConfig, ids: torch.Tensor) -> torch.Tensor:
    """LLaDA's forward written from the formula in llada-checkpoint.md, independent of the model code."""

    def rms(x, w):
        return w * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + config.rms_norm_eps))

    hd, n = config.d_model // config.n_heads, ids.shape[1]
    inv = 1.0 / config.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(n).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = state["model.transformer.wte.weight"][ids]
    for i in range(config.n_layers):
        block = {k.split(".")[-2]: v for k, v in state.items() if f".blocks.{i}." in k}

        def p(name, block=block):
            return block[name]

        h = rms(x, p("attn_norm"))
        q, k, v = (
            (h @ p(m).T).view(1, n, config.n_heads, hd).transpose(1, 2)
            for m in ("q_proj", "k_proj", "v_proj")
        )
        att = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(1, n, -1) @ p("attn_out").T
        h = rms(x, p("ff_norm"))
        x = x + (F.silu(h @ p("ff_proj").T) * (h @ p("up_proj").T)) @ p("ff_out").T
    return rms(x, state["model.transformer.ln_f.weight"]) @ state["model.transformer.ff_out.weight"].T


def test_forward_matches_an_independent_reference():
    model = tiny_llada(seed=1)
    ids = torch.randint(0, model.config.vocab_size, (1, 17))
    expected = reference_llada_logits(model.state_dict(), model.config, ids)
    torch.testing.assert_close(model(ids).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_right_padding_with_mask_equals_each_row_alone(attn):
    model = tiny_llada(seed=2)
    model.config._attn_implementation = attn
    lengths = [9, 5, 12]
    rows = [torch.randint(0, 300, (n,)) for n in lengths]
    ids = torch.full((3, 12), model.config.pad_token_id)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = row, 1
    batched = model(ids, attention_mask=mask).logits
    for b, row in enumerate(rows):
        alone = model(row[None]).logits[0]
        torch.testing.assert_close(batched[b, : len(row)], alone, atol=1e-5, rtol=1e-5)


def test_attention_is_bidirectional():
    model = tiny_llada(seed=3)
    ids = torch.randint(0, 300, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 300
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


def test_sdpa_and_eager_agree():
    torch.manual_seed(4)
    ids = torch.randint(0, 300, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    out = {}
    for attn in ("sdpa", "eager"):
        model = tiny_llada(seed=4)
        model.config._attn_implementation = attn
        out[attn] = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(out["sdpa"][0], out["eager"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["sdpa"][1, :7], out["eager"][1, :7], atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_gives_identical_gradients():
    ids = torch.randint(0, 300, (2, 9))
    grads = []
    for checkpointing in (False, True):
        model = tiny_llada(seed=5).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(b.gradient_checkpointing for b in model.model.transformer.blocks)
        model(ids).logits.logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-6)


def test_zero_modulation_equals_no_modulation_and_nonzero_changes_output():
    model = tiny_llada(seed=6)
    ids = torch.randint(0, 300, (2, 8))
    shape = (2, model.config.n_layers, 4, model.config.d_model)
    plain = model(ids).logits
    torch.testing.assert_close(model(ids, block_modulation=torch.zeros(shape)).logits, plain, atol=0, rtol=0)
    assert not torch.allclose(model(ids, block_modulation=0.1 * torch.randn(shape)).logits, plain)


def test_bf16_forward_runs_and_stays_close_to_fp32():
    model = tiny_llada(seed=7)
    ids = torch.randint(0, 300, (1, 8))
    fp32 = model(ids).logits
    bf16 = model.to(torch.bfloat16)(ids).logits
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().max() < 0.1


def test_sharded_published_layout_round_trip_and_auto_model(tmp_path):
    folder = save_tiny_llada_checkpoint(tmp_path / "ckpt", num_shards=3, seed=8)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].startswith("modeling_llada")  # remote code is named but never run
    assert len(list(folder.glob("model-*-of-00003.safetensors"))) == 3
    reference = tiny_llada(seed=8)
    loaded = LLaDAModelLM.from_pretrained(folder)
    ids = torch.randint(0, 300, (1, 6))
    torch.testing.assert_close(loaded(ids).logits, reference(ids).logits)
    auto = AutoModel.from_pretrained(folder)
    assert type(auto) is LLaDAModelLM
    bf16 = LLaDAModelLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert bf16.model.transformer.wte.weight.dtype == torch.bfloat16


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_llada(seed=9)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    loaded = LLaDAModelLM.from_pretrained(tmp_path / "saved")
    ids = torch.randint(0, 300, (1, 6))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_missing_shard_is_named(tmp_path):
    folder = save_tiny_llada_checkpoint(tmp_path / "ckpt", num_shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        LLaDAModelLM.from_pretrained(folder)


def test_unexpected_key_is_named(tmp_path):
    model = tiny_llada(seed=10)
    model.register_parameter("stray_weight", torch.nn.Parameter(torch.zeros(3)))
    folder = write_published_checkpoint(model, tmp_path / "ckpt", num_shards=1)
    with pytest.raises(ValueError, match="stray_weight"):
        LLaDAModelLM.from_pretrained(folder)


def test_folder_without_weights_says_what_to_pass(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(published_config_dict(tiny_llada_config())))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        LLaDAModelLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"block_type": "sequential"}, "block_type"),
        ({"activation_type": "gelu"}, "activation_type"),
        ({"d_model": 64, "n_heads": 5}, "not divisible"),
        ({"include_bias": True}, "include_bias"),
        ({"vocab_size": -5}, r"vocab_size=-5 must be a positive integer"),
        ({"n_heads": 0}, r"n_heads=0 must be a positive integer"),
        ({"d_model": 0}, r"d_model=0 must be a positive integer"),
        ({"mlp_hidden_size": 12.5}, r"mlp_hidden_size=12.5 must be a positive integer"),
        ({"rope_theta": 0.0}, r"rope_theta=0.0 must be a positive number"),
        ({"mask_token_id": 1000000}, r"mask_token_id=1000000 is not a token id of the vocabulary \[0, "),
        ({"pad_token_id": -1}, r"pad_token_id=-1 is not a token id"),
        ({"eos_token_id": [1, 1000000]}, r"eos_token_id=\[1, 1000000\] is not a token id"),
    ],
)
def test_bad_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        tiny_llada_config(**overrides)
    assert "\n" not in str(error.value)


def test_too_long_input_is_rejected():
    model = tiny_llada(max_sequence_length=8)
    with pytest.raises(ValueError, match="max_sequence_length"):
        model(torch.zeros(1, 9, dtype=torch.long))
