"""Text in, text out: tokenise prompts, run a sampler, decode only what was generated.

The sampler follows the config: a :class:`MDMGenerationConfig` runs the fixed-length baseline, a
:class:`FlexGenerationConfig` the flexible-length sampler; without one, the model's own
``generation_config`` decides (a LLaDA model has an MDM one, a FlexMDM a flexible one).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

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
    sampler = generate_mdm if _uses_mdm(model, generation_config) else generate_flex
    output = sampler(model, ids, None, generation_config, **kwargs)
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
    sampler = infill_mdm if _uses_mdm(model, generation_config) else infill
    output = sampler(model, prefix_ids, suffix_ids, generation_config, **kwargs)
    return tokenizer.batch_decode(output.middles, skip_special_tokens=skip_special_tokens)
