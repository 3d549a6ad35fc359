"""Samplers as evaluation generators: tokenised prompts in, :class:`Generation` per prompt out.

The harness (:mod:`flexretrofit.evaluation.harness`) hands a generator a batch of :class:`PromptIds`;
:class:`SamplerGenerator` runs one of the four samplers on it and decodes only what was generated:

- :class:`~flexretrofit.sampling.FlexGenerationConfig`: ``generate_flex`` (GSM8K) / ``infill`` (HumanEval);
- :class:`~flexretrofit.sampling.MDMGenerationConfig`: ``generate_mdm`` / ``infill_mdm`` (the LLaDA
  baseline, on a LLaDA model or on a FlexMDM used as a fixed-length MDM).

Prompts are built with the instruction-tuning layouts of :mod:`flexretrofit.data.formats`, so the
model is evaluated on exactly the token layout it was trained on. Completions are taken by token
position from the sampler output (the response after the prompt, or ``output.middles`` when
infilling), never by searching the decoded text for the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.data.formats import BOUNDARY_TOKEN, CodeInfillFormat, GSM8KFormat
from flexretrofit.evaluation.gsm8k import build_gsm8k_few_shot_prompt
from flexretrofit.evaluation.runner import Generation
from flexretrofit.sampling import (
    FlexGenerationConfig,
    GenerationOutput,
    MDMGenerationConfig,
    generate_flex,
    generate_mdm,
    infill,
    infill_mdm,
)

SAMPLERS = ("flex", "mdm")
INFILL_LAYOUTS = ("boundary", "plain")
GSM8K_PROMPT_STYLES = ("chat", "few_shot")
# Our wording; the instruction-tuning data pairs each code snippet with a task description.
DEFAULT_INFILL_INSTRUCTION = "Fill in the missing code."
# Per-row bookkeeping the harness sets; never part of the recorded settings.
_PER_CALL_FIELDS = ("row_seeds", "return_trace")


@dataclass(frozen=True)
class PromptIds:
    """One tokenised prompt. ``prefix``: the prompt (or the text before the gap); ``suffix``: the text
    after the gap (empty unless infilling); ``seed``: the row's sampler seed, so that a row's output
    does not depend on its batch, shard or position in the run."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...] = ()
    seed: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prefix) + len(self.suffix)


# ------------------------------------------------------------------------------------------------
# prompts
# ------------------------------------------------------------------------------------------------
def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def gsm8k_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, question: str, style: str = "chat", system_prompt: str | None = None
) -> list[int]:
    """Token ids of the GSM8K prompt for ``question``.

    ``"chat"``: the instruction-tuning layout (:meth:`GSM8KFormat.prompt_ids`: chat template, user turn =
    instruction + question, assistant prefill ``<reasoning>``); ``system_prompt`` replaces the default
    instruction (use the one the model was tuned with). ``"few_shot"``: the plain-text few-shot prompt for
    base models, after the tokenizer's BOS when it has one.
    """
    if style == "chat":
        if system_prompt is None:
            return GSM8KFormat(tokenizer).prompt_ids(question)
        return GSM8KFormat(tokenizer, system_prompt=system_prompt).prompt_ids(question)
    if style == "few_shot":
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + _encode(tokenizer, build_gsm8k_few_shot_prompt(question))
    raise ValueError(f"unknown GSM8K prompt style {style!r}; choose one of {GSM8K_PROMPT_STYLES}")


def infill_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    prefix: str,
    suffix: str,
    *,
    instruction: str = DEFAULT_INFILL_INSTRUCTION,
    layout: str = "boundary",
    use_chat_template: bool = False,
) -> tuple[list[int], list[int]]:
    """``(prefix_ids, suffix_ids)`` the infilling sampler starts from; the middle goes between them.

    ``"boundary"``: the code-infilling training layout ``instruction prefix BND | BND suffix``
    (:meth:`CodeInfillFormat.encode` with an empty middle, split between the two markers).
    ``"plain"``: ``prefix | suffix`` with no instruction and no markers (for models never tuned on
    the boundary layout, e.g. a base LLaDA).
    """
    if layout == "plain":
        return _encode(tokenizer, prefix), _encode(tokenizer, suffix)
    if layout != "boundary":
        raise ValueError(f"unknown infilling layout {layout!r}; choose one of {INFILL_LAYOUTS}")
    infill_format = CodeInfillFormat(tokenizer, use_chat_template=use_chat_template)
    ids = infill_format.encode(instruction, prefix, "", suffix)["input_ids"]
    # Split by lengths, not by searching for the marker: the code may itself spell the marker text.
    split = len(infill_format.instruction_ids(instruction)) + len(_encode(tokenizer, prefix)) + 1
    boundary = infill_format.boundary_id
    if ids[split - 1] != boundary or ids[split] != boundary:
        raise RuntimeError(
            "the infilling layout did not put the two boundary markers where expected; "
            "CodeInfillFormat.encode and infill_prompt_ids disagree on the layout"
        )
    return ids[:split], ids[split:]


# ------------------------------------------------------------------------------------------------
# sampler configs
# ------------------------------------------------------------------------------------------------
def build_generation_config(
    sampler: str, settings: Mapping[str, Any]
) -> FlexGenerationConfig | MDMGenerationConfig:
    """The sampler's config from a flat dict of its fields (``steps``, ``confidence``, ``gen_length``, ...).

    Raises:
        ValueError: for an unknown sampler or a field the sampler does not have (named in the message).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    config_class = FlexGenerationConfig if sampler == "flex" else MDMGenerationConfig
    unknown = sorted(set(settings) - set(config_class.sampler_fields))
    if unknown:
        raise ValueError(
            f"{unknown} are not settings of the {sampler} sampler; it takes "
            f"{', '.join(f for f in config_class.sampler_fields if f not in _PER_CALL_FIELDS)}"
        )
    return config_class(**dict(settings))


def generation_settings(config: FlexGenerationConfig | MDMGenerationConfig) -> dict[str, Any]:
    """Every field the sampler reads, as JSON-ready values (what a summary records)."""
    return {field: getattr(config, field) for field in config.sampler_fields if field not in _PER_CALL_FIELDS}


# ------------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------------
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
    """A batch generator for the harness: runs the sampler the config selects on :class:`PromptIds`.

    Args:
        model: a :class:`~flexretrofit.models.FlexMDMForMaskedDiffusion` (either sampler) or a
            :class:`~flexretrofit.models.LLaDAModelLM` (MDM sampler only).
        tokenizer: decodes the generated ids.
        generation_config: a :class:`FlexGenerationConfig` (flexible-length sampler) or an
            :class:`MDMGenerationConfig` (LLaDA's fixed-length sampler).
        infilling: call ``infill`` / ``infill_mdm`` with prefix and suffix instead of generating after
            the prompt.

    The flexible-length sampler gets each prompt's own seed (``row_seeds``), so a row's output does not
    depend on its batch. LLaDA's sampler draws from one generator per batch, seeded with the first
    row's seed; at temperature 0 with ``low_confidence`` remasking (the defaults) it draws nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        generation_config: FlexGenerationConfig | MDMGenerationConfig,
        *,
        infilling: bool,
        skip_special_tokens: bool = True,
    ):
        if not isinstance(generation_config, (FlexGenerationConfig, MDMGenerationConfig)):
            raise ValueError(
                f"generation_config must be a FlexGenerationConfig or MDMGenerationConfig, got "
                f"{type(generation_config).__name__}"
            )
        self.flexible = isinstance(generation_config, FlexGenerationConfig)
        if self.flexible and not hasattr(model, "insertion_schedule"):
            raise ValueError(
                f"the flexible-length sampler needs a FlexMDM, got a {type(model).__name__}; use the MDM "
                "sampler for a LLaDA model, or retrofit it (FlexMDMForMaskedDiffusion.from_llada)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.infilling = infilling
        self.skip_special_tokens = skip_special_tokens

    @property
    def sampler_name(self) -> str:
        """The sampling function this generator calls."""
        if self.flexible:
            return "infill" if self.infilling else "generate_flex"
        return "infill_mdm" if self.infilling else "generate_mdm"

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt (prefix + suffix tokens) the sampler accepts with this model and config."""
        config = self.model.config
        if self.flexible:
            cap = self.generation_config.max_length
            return int(config.max_length if cap is None else cap)
        limit = config.max_length if hasattr(self.model, "insertion_schedule") else config.max_sequence_length
        return int(limit) - self.generation_config.gen_length

    def settings(self) -> dict[str, Any]:
        """What the summary records about the sampler."""
        return {
            "sampler": "flex" if self.flexible else "mdm",
            "function": self.sampler_name,
            "row_seeds": "seed + row index" if self.flexible else "seed + index of the batch's first row",
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
        if self.flexible:
            seeding = {"row_seeds": [prompt.seed for prompt in prompts]}
        else:
            seeding = {"seed": prompts[0].seed}
        # Looked up at call time (module globals), so tests can stand in a stub sampler.
        sampler = {
            "generate_flex": generate_flex,
            "infill": infill,
            "generate_mdm": generate_mdm,
            "infill_mdm": infill_mdm,
        }[self.sampler_name]
        if self.infilling:
            output = sampler(self.model, prefixes, suffixes, self.generation_config, **seeding)
        else:
            output = sampler(self.model, prefixes, None, self.generation_config, **seeding)
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


def boundary_token_ids(tokenizer: PreTrainedTokenizerBase, layout: str) -> list[int]:
    """Ids a middle must never contain: the boundary marker, in the ``"boundary"`` layout."""
    if layout != "boundary":
        return []
    token_id = tokenizer.get_vocab().get(BOUNDARY_TOKEN)
    return [] if token_id is None else [int(token_id)]


def tokens_to_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int]:
    """Ids of vocabulary entries given by their text (``"<|eot_id|>"``); no id literals on command lines."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        raise ValueError(
            f"{missing} are not tokens of the tokenizer's vocabulary; give tokens as they are spelled"
        )
    return [int(vocab[token]) for token in tokens]
