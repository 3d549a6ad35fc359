"""Tiny models, tokenizers and checkpoint folders for tests and demos (CPU, seconds, no downloads).

The tiny tokenizer is a byte-level BPE trained offline on a small built-in corpus, with the special
tokens in the roles LLaDA uses them (mask, eos = pad, bos, chat headers) plus a boundary marker for
infilling. Tiny checkpoints are written in the published LLaDA layout (config.json with the published
field names, sharded safetensors and an index), so they exercise the real loading path.

Test helpers import the library, never the other way round: library code does not import this module.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from flexretrofit.maze.instances import TOKENIZER_TEXT
from flexretrofit.models.flexmdm import FlexMDMConfig, FlexMDMForMaskedDiffusion
from flexretrofit.models.llada import LLaDAConfig, LLaDAModelLM
from flexretrofit.tokenizer import prepare_tokenizer

SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "mask_token": "<|mdm_mask|>",
}
EXTRA_SPECIAL_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|boundary|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A masked diffusion model fills in missing tokens.",
    "Question: A baker fills 36 jars on Monday and a third as many on Tuesday. How many jars in all?",
    "<reasoning>36 / 3 = 12 jars on Tuesday. 36 + 12 = 48 jars in total.</reasoning>",
    "<answer>\\boxed{72}</answer> The answer is 72. 1,000 + 2,500 = 3,500; -7 * 3 = -21; 0.5 * 4 = 2.",
    "def add(a, b):\n    return a + b\n\n\ndef fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for i in range(10):\n    print(i)\nwhile x > 0:\n    x -= 1\nreturn [x for x in xs if x % 2 == 0]\n",
    *TOKENIZER_TEXT.splitlines(),  # every maze symbol, one token each
    "user assistant system You are a helpful assistant. Solve the problem step by step.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100",
]


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(SPECIAL_TOKENS.values()) + EXTRA_SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def build_tiny_tokenizer(
    save_dir: str | os.PathLike | None = None, vocab_size: int = 384
) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer (~``vocab_size`` entries) with LLaDA's special-token roles.

    Special tokens: ``<|startoftext|>`` (bos), ``<|endoftext|>`` (eos = pad), ``<|mdm_mask|>`` (mask),
    the Llama-3 chat headers and ``<|boundary|>`` (infilling marker). Saved to ``save_dir`` if given.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json(vocab_size)),
        pad_token=SPECIAL_TOKENS["eos_token"],
        additional_special_tokens=EXTRA_SPECIAL_TOKENS,
        **SPECIAL_TOKENS,
    )
    prepare_tokenizer(tokenizer)
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def tiny_llada_config(tokenizer: PreTrainedTokenizerFast | None = None, **overrides) -> LLaDAConfig:
    """A 2-layer, d=64 LLaDA config whose vocabulary and special ids come from ``tokenizer``."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    fields = dict(
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=128,
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        max_sequence_length=512,
        rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    fields.update(overrides)
    return LLaDAConfig(**fields)


def tiny_llada(tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0, **overrides) -> LLaDAModelLM:
    """A randomly initialised tiny LLaDA (fp32, eval mode), reproducible from ``seed``."""
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_llada_config(tokenizer, **overrides)).eval()


def tiny_flexmdm(
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    backbone_overrides: dict | None = None,
    **flex_overrides,
) -> FlexMDMForMaskedDiffusion:
    """A tiny FlexMDM around :func:`tiny_llada` (modulation group size 1 unless overridden)."""
    backbone = tiny_llada(tokenizer, seed=seed, **(backbone_overrides or {}))
    flex_overrides.setdefault("modulation_group_size", 1)
    torch.manual_seed(seed + 1)
    config = FlexMDMConfig(backbone_config=backbone.config, **flex_overrides)
    return FlexMDMForMaskedDiffusion(config, backbone=backbone).eval()


def published_config_dict(config: LLaDAConfig) -> dict:
    """``config`` as the published ``config.json`` spells it (field names, remote-code auto_map included)."""
    return {
        "activation_type": config.activation_type,
        "alibi": False,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        },
        "block_type": config.block_type,
        "d_model": config.d_model,
        "embedding_dropout": 0.0,
        "embedding_size": config.embedding_size,
        "eos_token_id": config.eos_token_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_fn": "mitchell",
        "init_std": 0.02,
        "layer_norm_type": config.layer_norm_type,
        "mask_token_id": config.mask_token_id,
        "max_sequence_length": config.max_sequence_length,
        "mlp_hidden_size": config.mlp_hidden_size,
        "mlp_ratio": 4,
        "model_type": "llada",
        "n_heads": config.n_heads,
        "n_kv_heads": config.n_kv_heads,
        "n_layers": config.n_layers,
        "pad_token_id": config.pad_token_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": config.rms_norm_eps,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": config.rope_theta,
        "scale_logits": False,
        "use_cache": False,
        "vocab_size": config.vocab_size,
        "weight_tying": False,
    }


def write_published_checkpoint(model: LLaDAModelLM, folder: str | os.PathLike, num_shards: int = 2) -> Path:
    """Write ``model`` as the published release lays it out: config.json, ``model-0000k-of-0000n.safetensors``
    shards and ``model.safetensors.index.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(published_config_dict(model.config), indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    per_shard = -(-len(keys) // num_shards)
    weight_map, total = {}, 0
    for shard in range(num_shards):
        name = f"model-{shard + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {k: state[k] for k in keys[shard * per_shard : (shard + 1) * per_shard]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(v.numel() * v.element_size() for v in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


def save_tiny_llada_checkpoint(
    folder: str | os.PathLike,
    num_shards: int = 2,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> Path:
    """A tiny random LLaDA checkpoint folder in the published layout, with its tokenizer files."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    folder = write_published_checkpoint(tiny_llada(tokenizer, seed=seed), folder, num_shards)
    tokenizer.save_pretrained(folder)
    return folder
