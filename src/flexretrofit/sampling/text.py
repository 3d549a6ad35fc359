"""Text in, text out: tokenise prompts, run a sampler, decode only what was generated.

The sampler follows the config (:func:`~flexretrofit.sampling.methods.sampling_method_of`): a
:class:`~flexretrofit.sampling.MDMGenerationConfig` runs the fixed-length baseline, a
:class:`~flexretrofit.sampling.FlexGenerationConfig` the flexible-length sampler; without one, the model's own
``generation_config`` decides (a LLaDA model has an MDM one, a FlexMDM a flexible one).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.sampling.methods import GenerationConfig, SamplingMethod, sampling_method_of
from flexretrofit.tokenizer import stop_token_ids


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_special_tokens: bool
) -> list[list[int]]:
    if isinstance(texts, str):
        raise ValueError("pass a list of strings (one per example), not a single string.")
    return [tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"] for text in texts]


def with_stop_ids(
    method: SamplingMethod,
    tokenizer: PreTrainedTokenizerBase,
    overrides: dict,
    generation_config: GenerationConfig | None = None,
) -> dict:
    """``overrides`` with the tokenizer's stop ids (EOS and ``<|eot_id|>``) as ``eos_token_id``, for a sampler
    that stops at stop ids (its config has the field: the MDM one) when neither ``overrides`` nor
    ``generation_config`` sets them. A chat model ends its turn with ``<|eot_id|>``, not only EOS."""
    if "eos_token_id" not in method.config_class.sampler_fields or "eos_token_id" in overrides:
        return overrides
    if getattr(generation_config, "eos_token_id", None) is not None:
        return overrides
    return {**overrides, "eos_token_id": stop_token_ids(tokenizer)}


def _sampler(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    generation_config: GenerationConfig | None,
    kwargs: dict,
) -> tuple[SamplingMethod, dict]:
    """The sampler the config (or the model's own) selects, and the call's overrides with its stop ids."""
    method = sampling_method_of(model, generation_config)
    config = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    return method, with_stop_ids(method, tokenizer, kwargs, config)


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of ``stops``; empty stop strings are ignored."""
    found = (text.find(stop) for stop in stops if stop)
    return text[: min((position for position in found if position >= 0), default=len(text))]


def generate_text(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    generation_config: GenerationConfig | None = None,
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
    method, kwargs = _sampler(model, tokenizer, generation_config, kwargs)
    output = method.generate(model, ids, None, generation_config, **kwargs)
    return tokenizer.batch_decode(output.generated_ids(), skip_special_tokens=skip_special_tokens)


def infill_text(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    suffixes: Sequence[str],
    generation_config: GenerationConfig | None = None,
    add_special_tokens: bool = False,
    skip_special_tokens: bool = True,
    **kwargs,
) -> list[str]:
    """The generated middle between each prefix and suffix, decoded from its token positions.

    Prefix and suffix are tokenised separately (no BPE merge across the gap).
    """
    prefix_ids = _encode(tokenizer, prefixes, add_special_tokens)
    suffix_ids = _encode(tokenizer, suffixes, False)
    method, kwargs = _sampler(model, tokenizer, generation_config, kwargs)
    output = method.infill(model, prefix_ids, suffix_ids, generation_config, **kwargs)
    return tokenizer.batch_decode(output.middles, skip_special_tokens=skip_special_tokens)
