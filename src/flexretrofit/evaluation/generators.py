"""Samplers as evaluation generators: tokenised prompts in, :class:`Generation` per prompt out.

The harness (:mod:`flexretrofit.evaluation.harness`) hands a generator a batch of :class:`PromptIds`;
:class:`SamplerGenerator` runs the sampler of the generation config's method on it (looked up in
:data:`flexretrofit.sampling.methods.SAMPLING_METHODS`: ``generate`` after a prompt, ``infill`` between a
prefix and a suffix) and decodes only what was generated.

Prompts are built by the tasks (:mod:`flexretrofit.evaluation.tasks`) with the instruction-tuning layouts
of :mod:`flexretrofit.data.formats`, so the model is evaluated on exactly the token layout it was trained
on. Completions are taken by token position from the sampler output (the response after the prompt, or
``output.middles`` when infilling), never by searching the decoded text for the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.runner import Generation, PromptIds
from flexretrofit.evaluation.tasks.gsm8k import GSM8K_PROMPT_STYLES, gsm8k_prompt_ids
from flexretrofit.evaluation.tasks.humaneval_infill import (
    DEFAULT_INFILL_INSTRUCTION,
    INFILL_LAYOUTS,
    infill_prompt_ids,
)
from flexretrofit.models.auto import default_method, method_model_class, needs_retrofit
from flexretrofit.sampling import GenerationOutput, build_generation_config
from flexretrofit.sampling.methods import SAMPLING_METHODS, GenerationConfig, sampling_method
from flexretrofit.sampling.sequences import canvas_limit

__all__ = [
    "DEFAULT_INFILL_INSTRUCTION",
    "GSM8K_PROMPT_STYLES",
    "INFILL_LAYOUTS",
    "PER_CALL_FIELDS",
    "PromptIds",
    "SamplerGenerator",
    "build_generation_config",
    "completions_from_output",
    "generation_settings",
    "gsm8k_prompt_ids",
    "infill_prompt_ids",
    "tokens_to_ids",
]

# Per-row bookkeeping the harness sets; never part of the recorded settings.
PER_CALL_FIELDS = ("row_seeds", "return_trace")


def generation_settings(config: GenerationConfig) -> dict[str, Any]:
    """Every field the sampler reads, as JSON-ready values (what a summary records)."""
    return {field: getattr(config, field) for field in config.sampler_fields if field not in PER_CALL_FIELDS}


def completions_from_output(
    output: GenerationOutput,
    tokenizer: PreTrainedTokenizerBase,
    *,
    infilling: bool,
    skip_special_tokens: bool = True,
) -> list[Generation]:
    """Decode what each row generated, taken by token position: the response after the prompt
    (``output.generated_ids()``), or the middle (``output.middles``) when ``infilling``.
    ``num_tokens`` is the number of generated tokens."""
    if infilling:
        if output.middles is None:
            raise ValueError("an infilling sampler output must carry middles (token ids by position)")
        generated = output.middles
    else:
        generated = output.generated_ids()
    return [
        Generation(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens), num_tokens=len(ids))
        for ids in generated
    ]


class SamplerGenerator:
    """A batch generator for the harness: runs the sampler of ``generation_config``'s method on
    :class:`PromptIds`.

    Args:
        model: a model the method samples (:func:`flexretrofit.models.auto.needs_retrofit` says which:
            a FlexMDM runs either method, a LLaDA the MDM sampler only).
        tokenizer: decodes the generated ids.
        generation_config: a row's config class of the sampling table (:class:`FlexGenerationConfig`,
            :class:`MDMGenerationConfig`); it selects the method.
        infilling: call the method's ``infill`` with prefix and suffix instead of generating after the prompt.

    A sampler whose config takes ``row_seeds`` gets each prompt's own seed, so a row's output does not
    depend on its batch. Otherwise the sampler draws from one generator per batch, seeded with the first
    row's seed (LLaDA's sampler at temperature 0 with ``low_confidence`` remasking draws nothing).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        generation_config: GenerationConfig,
        *,
        infilling: bool,
        skip_special_tokens: bool = True,
    ):
        try:
            self.method = sampling_method(generation_config).name
        except TypeError:
            accepted = " or ".join(row.config_class.__name__ for row in SAMPLING_METHODS.values())
            raise ValueError(
                f"generation_config must be a {accepted}, got {type(generation_config).__name__}"
            ) from None
        model_type = getattr(model.config, "model_type", None)
        if needs_retrofit(model_type, self.method):
            raise ValueError(
                f"the {self.method} sampler needs a {method_model_class(self.method).__name__}, got a {type(model).__name__}; sample it with "
                f"its own method ({default_method(model_type)}), or retrofit it first "
                "(FlexMDMForMaskedDiffusion.from_llada)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.infilling = infilling
        self.skip_special_tokens = skip_special_tokens
        self.sampler_name = self._sampler().__name__  # the sampling function this generator calls
        self.per_row_seeds = "row_seeds" in generation_config.sampler_fields

    def _sampler(self):
        # Looked up in the table at call time, so tests can stand in a stub sampler.
        row = SAMPLING_METHODS[self.method]
        return row.infill if self.infilling else row.generate

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt (prefix + suffix tokens) the sampler accepts with this model and config:
        the config's cap on the whole sequence (``max_length``) or the model's window, less the
        response length the config reserves (``gen_length``), as the config's fields say."""
        config, fields = self.generation_config, self.generation_config.sampler_fields
        window = canvas_limit(self.model)
        cap = config.max_length if "max_length" in fields and config.max_length is not None else window
        reserved = config.gen_length if "gen_length" in fields else 0
        return int(cap) - int(reserved)

    def settings(self) -> dict[str, Any]:
        """What the summary records about the sampler."""
        return {
            "method": self.method,
            "function": self.sampler_name,
            "row_seeds": "seed + row index"
            if self.per_row_seeds
            else "seed + index of the batch's first row",
            **generation_settings(self.generation_config),
        }

    def __call__(self, prompts: Sequence[PromptIds]) -> list[Generation]:
        """Generate for a batch; ``Generation.num_tokens`` = generated tokens of each row."""
        if not prompts:
            return []
        prefixes = [list(prompt.prefix) for prompt in prompts]
        suffixes = [list(prompt.suffix) for prompt in prompts]
        if not self.infilling and any(suffixes):
            raise ValueError("a generation prompt has suffix ids; build the generator with infilling=True")
        if self.per_row_seeds:
            seeding: dict[str, Any] = {"row_seeds": [prompt.seed for prompt in prompts]}
        else:
            seeding = {"seed": prompts[0].seed}
        # generate(model, ids, attention_mask, config) / infill(model, prefixes, suffixes, config)
        second = suffixes if self.infilling else None
        output = self._sampler()(self.model, prefixes, second, self.generation_config, **seeding)
        _check_prompts_kept(output, prefixes, suffixes)
        return completions_from_output(
            output, self.tokenizer, infilling=self.infilling, skip_special_tokens=self.skip_special_tokens
        )


def _check_prompts_kept(
    output: GenerationOutput, prefixes: list[list[int]], suffixes: list[list[int]]
) -> None:
    """The positions the completions are read from are only right if the prompt is where it started."""
    if len(output.lengths) != len(prefixes):
        raise RuntimeError(f"the sampler returned {len(output.lengths)} rows for {len(prefixes)} prompts")
    sequences, lengths = output.sequences.cpu(), output.lengths.tolist()
    for row, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
        kept_prefix = sequences[row, : len(prefix)].tolist() == prefix
        kept_suffix = sequences[row, lengths[row] - len(suffix) : lengths[row]].tolist() == suffix
        if not (kept_prefix and kept_suffix) or int(output.prompt_lengths[row]) != len(prefix):
            raise RuntimeError(
                f"row {row} of the sampler output does not start with its prompt (and end with its suffix); "
                "the generated tokens cannot be located by position"
            )


def tokens_to_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int]:
    """Ids of vocabulary entries given by their text (``"<|eot_id|>"``); no id literals on command lines."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        raise ValueError(
            f"{missing} are not tokens of the tokenizer's vocabulary; give tokens as they are spelled"
        )
    return [int(vocab[token]) for token in tokens]
