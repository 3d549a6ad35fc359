"""Text in, text out: tokenise prompts, run a sampler, decode only what was generated.

The sampler follows the config: a :class:`MDMGenerationConfig` runs the fixed-length baseline, a
:class:`FlexGenerationConfig` the flexible-length sampler; without one, the model's own
``generation_config`` decides (a LLaDA model has an MDM one, a FlexMDM a flexible one).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.models.tokenizer import stop_token_ids
from flexretrofit.sampling.config import FlexGenerationConfig, MDMGenerationConfig
from flexretrofit.sampling.flex import generate_flex, infill
from flexretrofit.sampling.mdm import generate_mdm, infill_mdm


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_special_tokens: bool
) -> list[list[int]]:
    if isinstance(texts, str):
        raise ValueError("pass a list of strings (one per example), not a single string.")
    return [tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"] for text in texts]


def _uses_mdm(model: nn.Module, generation_config) -> bool:
    config = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    return isinstance(config, MDMGenerationConfig)


def _with_stop_tokens(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, generation_config, kwargs: dict
) -> dict:
    """The MDM sampler's overrides with its stop ids read from the tokenizer (EOS and ``<|eot_id|>``) unless set."""
    config = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    if "eos_token_id" in kwargs or getattr(config, "eos_token_id", None) is not None:
        return kwargs
    return {**kwargs, "eos_token_id": stop_token_ids(tokenizer)}


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``; empty stop strings are ignored."""
    found = (text.find(stop) for stop in stops if stop)
    return text[: min((position for position in found if position >= 0), default=len(text))]


def generate_text(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    generation_config: FlexGenerationConfig | MDMGenerationConfig | None = None,
    add_special_tokens: bool = False,
    skip_special_tokens: bool = True,
    **kwargs,
) -> list[str]:
    """The generated continuation of each prompt (the prompt itself is not included).

    Args:
        prompts: one string per example (already chat-formatted if the model needs it).
        generation_config: selects the sampler (see the module docstring); ``**kwargs`` override its fields.
        add_special_tokens: let the tokenizer add its BOS/EOS when encoding (off: prompts carry their own).
        skip_special_tokens: drop special tokens when decoding.
    """
    ids = _encode(tokenizer, prompts, add_special_tokens)
    if _uses_mdm(model, generation_config):
        kwargs = _with_stop_tokens(model, tokenizer, generation_config, kwargs)
        output = generate_mdm(model, ids, None, generation_config, **kwargs)
    else:
        output = generate_flex(model, ids, None, generation_config, **kwargs)
    return tokenizer.batch_decode(output.generated_ids(), skip_special_tokens=skip_special_tokens)


def infill_text(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    suffixes: Sequence[str],
    generation_config: FlexGenerationConfig | MDMGenerationConfig | None = None,
    add_special_tokens: bool = False,
    skip_special_tokens: bool = True,
    **kwargs,
) -> list[str]:
    """The generated middle between each prefix and suffix, decoded from its token positions.

    Prefix and suffix are tokenised separately (no BPE merge across the gap).
    """
    prefix_ids = _encode(tokenizer, prefixes, add_special_tokens)
    suffix_ids = _encode(tokenizer, suffixes, False)
    if _uses_mdm(model, generation_config):
        kwargs = _with_stop_tokens(model, tokenizer, generation_config, kwargs)
        output = infill_mdm(model, prefix_ids, suffix_ids, generation_config, **kwargs)
    else:
        output = infill(model, prefix_ids, suffix_ids, generation_config, **kwargs)
    return tokenizer.batch_decode(output.middles, skip_special_tokens=skip_special_tokens)
