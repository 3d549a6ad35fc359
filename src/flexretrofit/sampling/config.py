"""Generation configs of the two samplers, as :class:`transformers.GenerationConfig` subclasses.

Both save and load like any generation config (``save_pretrained`` / ``from_pretrained``); a model keeps
its own as ``model.generation_config`` (saved as ``generation_config.json`` beside config.json), and it
is the default of every sampler call. Keyword arguments given to a sampler override the config's fields
for that call only (see :func:`resolve_generation_config`); an unknown keyword is an error, not a
silently stored attribute.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME

CONFIDENCE_METHODS = ("top_prob", "prob_diff", "entropy", "position")
COUNT_DISTRIBUTIONS = ("poisson", "binomial")
GAP_ROUNDINGS = ("stochastic", "nearest")
REMASKING_METHODS = ("low_confidence", "random")
# Far above any useful setting (the published ones reach 4096) yet small enough that a typo such as
# 1000000000 is refused at once instead of running for days.
MAX_STEPS = 100_000


def _check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f">= {minimum} and <= {maximum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}.")


def _check_number(name: str, value: Any, minimum: float, *, above: bool, meaning: str) -> None:
    """A finite real ``>= minimum`` (``> minimum`` when ``above``): NaN and infinity pass no comparison
    test reliably (``nan < 0`` is False), so they are refused by name here, once for every caller."""
    in_range = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not in_range or (value <= minimum if above else value < minimum):
        bound = f"{'>' if above else '>='} {minimum:g}"
        raise ValueError(f"{name} must be {bound} and finite ({meaning}), got {value!r}.")


def _check_token_list(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"{name} must be a list of non-negative token ids, got {value!r}.")


class _SamplerConfig(GenerationConfig):
    """Shared behaviour: ``do_sample`` mirrors ``temperature > 0``; sampler fields are validated."""

    # The fields a sampler reads; only these may be overridden by keyword arguments.
    sampler_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_model_config(cls, model_config: Any) -> _SamplerConfig:
        """The defaults: sampler settings never come from the model config (whose ``max_length`` is the
        model's cap and whose ``eos_token_id`` is the model's own, both read by the samplers directly).

        transformers calls this to build ``model.generation_config`` when a model is created.
        """
        config = cls()
        config._original_object_hash = hash(config)
        return config

    def to_diff_dict(self) -> dict[str, Any]:
        # Write every sampler field, not only those that differ from transformers' GenerationConfig():
        # a saved file then keeps its meaning whatever the defaults of this class become.
        diff = super().to_diff_dict()
        values = self.to_dict()
        diff.update({name: values[name] for name in self.sampler_fields})
        return diff

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None) -> None:
        # Temperature 0 means argmax here, not a sampling flag set without do_sample: mark do_sample as
        # the user's choice so transformers does not warn about the combination.
        temperature = getattr(self, "temperature", None)
        # Checked before the comparison below, which would raise a TypeError on text.
        _check_number("temperature", temperature, 0, above=False, meaning="0 = argmax")
        self.do_sample = temperature > 0
        user_set = (set(user_set_attributes or ()) - {"temperature"}) | {"do_sample"}
        super().validate(strict=strict, user_set_attributes=user_set)
        self._check_sampler_fields()

    def _check_sampler_fields(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_common(self) -> None:
        _check_positive_int("steps", self.steps, maximum=MAX_STEPS)
        _check_number("temperature", self.temperature, 0, above=False, meaning="0 = argmax")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")
        _check_token_list("suppress_tokens", self.suppress_tokens)


class FlexGenerationConfig(_SamplerConfig):
    """Settings of :func:`flexretrofit.sampling.generate_flex` and :func:`flexretrofit.sampling.infill`.

    Args:
        steps: number of sampler steps (one forward pass each); the last step only fills every remaining
            MASK, so at least 2 are needed to generate anything.
        max_length: cap on the total sequence length (prompt + response); None = ``model.config.max_length``.
        confidence: how MASK positions are ranked for unmasking: ``"top_prob"`` (probability of the most
            likely token), ``"prob_diff"`` (top-1 minus top-2 probability), ``"entropy"`` (lowest entropy
            first) or ``"position"`` (leftmost first).
        sliding_window: rank only the leftmost ``max(min(floor(window_scale * K), max_window), K)`` MASKs,
            where ``K`` is the step's unmask count (published HumanEval-infill setting: 15 and 32).
        window_scale / max_window: the window's scale ``a`` and its cap.
        temperature: 0 = argmax tokens; > 0 = sample from ``softmax(logits / temperature)``.
        seed: rows use seeds ``seed, seed + 1, ...`` unless ``row_seeds`` is given.
        row_seeds: explicit per-row seeds (a row's result depends only on its prompt and its seed).
        suppress_tokens: token ids never emitted, on top of MASK, PAD and EOS (always suppressed).
        return_trace: also return every step's state (:class:`~flexretrofit.sampling.GenerationStep`).
        bucket_size: each step runs on the current lengths rounded up to a multiple of this.
        fixed_canvas / full_softmax: run every step on a ``max_length`` canvas / with a full-vocabulary
            softmax at every position (the published sampler's cost). Same output; for benchmarks only.
        count_distribution: ``"poisson"`` (published: Euler steps of the rates, ``K ~ Poisson(rate dt)``) or
            ``"binomial"`` (the exact jumps over each step from the remaining counts, and the last inserting
            step inserts every slot's whole predicted gap).
        gap_rounding: how ``"binomial"`` turns a predicted gap into a whole count: ``"stochastic"`` (keeps the
            mean: 1.3 becomes 1 or 2) or ``"nearest"`` (1.3 becomes 1: right when the true gap is one integer
            the model is nearly sure of, as between two given cells of a maze path).
    """

    sampler_fields: ClassVar[tuple[str, ...]] = (
        "steps",
        "max_length",
        "confidence",
        "sliding_window",
        "window_scale",
        "max_window",
        "temperature",
        "seed",
        "row_seeds",
        "suppress_tokens",
        "return_trace",
        "bucket_size",
        "fixed_canvas",
        "full_softmax",
        "count_distribution",
        "gap_rounding",
    )

    def __init__(
        self,
        steps: int = 256,
        max_length: int | None = None,
        confidence: str = "top_prob",
        sliding_window: bool = False,
        window_scale: float = 15.0,
        max_window: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
        row_seeds: list[int] | None = None,
        suppress_tokens: list[int] | None = None,
        return_trace: bool = False,
        bucket_size: int = 16,
        fixed_canvas: bool = False,
        full_softmax: bool = False,
        count_distribution: str = "poisson",
        gap_rounding: str = "stochastic",
        **kwargs,
    ):
        # Set before the parent's __init__, which calls validate().
        self.steps = steps
        self.count_distribution = count_distribution
        self.gap_rounding = gap_rounding
        self.confidence = confidence
        self.sliding_window = sliding_window
        self.window_scale = window_scale
        self.max_window = max_window
        self.seed = seed
        self.row_seeds = row_seeds
        self.return_trace = return_trace
        self.bucket_size = bucket_size
        self.fixed_canvas = fixed_canvas
        self.full_softmax = full_softmax
        super().__init__(
            max_length=max_length, temperature=temperature, suppress_tokens=suppress_tokens, **kwargs
        )

    def _check_sampler_fields(self) -> None:
        self._check_common()
        if self.confidence not in CONFIDENCE_METHODS:
            raise ValueError(
                f"unknown confidence method {self.confidence!r}; choose one of {', '.join(CONFIDENCE_METHODS)}."
            )
        if self.max_length is not None:
            _check_positive_int("max_length", self.max_length)
        _check_number("window_scale", self.window_scale, 0, above=True, meaning="published: 15")
        _check_positive_int("max_window", self.max_window)
        _check_positive_int("bucket_size", self.bucket_size)
        if self.count_distribution not in COUNT_DISTRIBUTIONS:
            raise ValueError(
                f"unknown count_distribution {self.count_distribution!r}; choose one of {', '.join(COUNT_DISTRIBUTIONS)}."
            )
        if self.gap_rounding not in GAP_ROUNDINGS:
            raise ValueError(
                f"unknown gap_rounding {self.gap_rounding!r}; choose one of {', '.join(GAP_ROUNDINGS)}."
            )
        if self.row_seeds is not None:
            if torch.is_tensor(self.row_seeds):
                self.row_seeds = [int(s) for s in self.row_seeds.tolist()]
            if not isinstance(self.row_seeds, (list, tuple)) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in self.row_seeds
            ):
                raise ValueError(
                    f"row_seeds must be a list of integers (one per row), got {self.row_seeds!r}."
                )


class MDMGenerationConfig(_SamplerConfig):
    """Settings of the fixed-length MDM baseline (:func:`flexretrofit.sampling.generate_mdm`), LLaDA's sampler.

    Args:
        steps: total forward passes, split evenly over the blocks (must be a multiple of their number).
        gen_length: number of MASKs after the prompt (or between prefix and suffix when infilling).
        block_length: semi-autoregressive block size; ``gen_length`` must be a multiple of it.
        temperature: 0 = argmax; > 0 adds LLaDA's float64 Gumbel noise (``exp(logits) / (-log U)^T``).
        cfg_scale: classifier-free guidance; 0 = off. The unconditional input has the prompt replaced by MASK.
        remasking: ``"low_confidence"`` (unmask the highest softmax probability of the chosen token first)
            or ``"random"``.
        suppress_tokens: ids never emitted (MASK always is). None or ``[]`` = nothing else, as in LLaDA's
            reference sampler: the model ends its answer with a stop token, and the response is cut at the
            first one (``eos_token_id``); infilled middles drop them. ``[eos]`` (plus ``<|eot_id|>``'s id
            for instruct models) forces the whole ``gen_length`` to be content.
        eos_token_id: the stop ids the response is cut at (an id or a list); None = the model's EOS. PAD
            always stops. Text front ends add ``<|eot_id|>`` when the tokenizer has it
            (:func:`flexretrofit.models.tokenizer.stop_token_ids`).
        seed: seeds the generator used for Gumbel noise and random remasking (unless one is passed).
        return_trace: also return every step's state.
    """

    sampler_fields: ClassVar[tuple[str, ...]] = (
        "steps",
        "gen_length",
        "block_length",
        "temperature",
        "cfg_scale",
        "remasking",
        "suppress_tokens",
        "eos_token_id",
        "seed",
        "return_trace",
    )

    def __init__(
        self,
        steps: int = 128,
        gen_length: int = 128,
        block_length: int = 32,
        temperature: float = 0.0,
        cfg_scale: float = 0.0,
        remasking: str = "low_confidence",
        suppress_tokens: list[int] | None = None,
        seed: int = 0,
        return_trace: bool = False,
        **kwargs,
    ):
        self.steps = steps
        self.gen_length = gen_length
        self.block_length = block_length
        self.cfg_scale = cfg_scale
        self.remasking = remasking
        self.seed = seed
        self.return_trace = return_trace
        super().__init__(temperature=temperature, suppress_tokens=suppress_tokens, **kwargs)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def _check_sampler_fields(self) -> None:
        self._check_common()
        _check_positive_int("gen_length", self.gen_length)
        _check_positive_int("block_length", self.block_length)
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length={self.gen_length} is not a multiple of block_length={self.block_length}; "
                "pick a block_length that divides gen_length (or block_length = gen_length for one block)."
            )
        if self.steps % self.num_blocks:
            raise ValueError(
                f"steps={self.steps} cannot be split evenly over {self.num_blocks} blocks "
                f"(gen_length / block_length); use a multiple of {self.num_blocks}."
            )
        if self.steps > self.gen_length:
            raise ValueError(
                f"steps={self.steps} is more than gen_length={self.gen_length}: every step unmasks at least "
                f"one token, so the steps past {self.gen_length} would only repeat forward passes; pass "
                f"steps <= {self.gen_length}."
            )
        if self.remasking not in REMASKING_METHODS:
            raise ValueError(
                f"unknown remasking {self.remasking!r}; choose one of {', '.join(REMASKING_METHODS)}."
            )
        _check_number("cfg_scale", self.cfg_scale, 0, above=False, meaning="0 = no guidance")
        eos = self.eos_token_id
        _check_token_list("eos_token_id", [eos] if isinstance(eos, int) else eos)


# transformers' generate() arguments with another name (or no counterpart) here: the hint to give.
_TRANSFORMERS_ARGUMENTS = {
    "max_new_tokens": {
        "FlexGenerationConfig": "a FlexMDM chooses the response length; cap the total with max_length",
        "MDMGenerationConfig": "the response length is gen_length",
    },
    "do_sample": "temperature > 0 samples, temperature = 0 takes the argmax",
}


def _unknown_options_message(unknown: list[str], config_class: type[_SamplerConfig]) -> str:
    hints = []
    for name in unknown:
        hint = _TRANSFORMERS_ARGUMENTS.get(name)
        if isinstance(hint, dict):
            hint = hint.get(config_class.__name__)
        if hint:
            hints.append(f"{name}: {hint}")
    return (
        f"unknown generation option(s) {unknown} for {config_class.__name__}; "
        + (f"{'; '.join(hints)}; " if hints else "")
        + f"it accepts {', '.join(config_class.sampler_fields)}."
    )


def resolve_generation_config(
    generation_config: GenerationConfig | None,
    config_class: type[_SamplerConfig],
    overrides: dict[str, Any],
    model: Any = None,
) -> _SamplerConfig:
    """A validated copy of ``generation_config`` with ``overrides`` applied.

    Without ``generation_config`` the base is ``model.generation_config`` when it is a ``config_class``
    (the config saved with the model), else ``config_class()``.

    Raises:
        ValueError: on a config of another class, an unknown override, or an invalid value.
    """
    if generation_config is None:
        saved = getattr(model, "generation_config", None)
        config = copy.deepcopy(saved) if isinstance(saved, config_class) else config_class()
    elif isinstance(generation_config, config_class):
        config = copy.deepcopy(generation_config)
    else:
        raise ValueError(
            f"this sampler takes a {config_class.__name__}, got {type(generation_config).__name__}; "
            f"build one with {config_class.__name__}(...) or pass its fields as keyword arguments."
        )
    unknown = sorted(set(overrides) - set(config_class.sampler_fields))
    if unknown:
        raise ValueError(_unknown_options_message(unknown, config_class))
    overrides = dict(overrides)
    if torch.is_tensor(overrides.get("row_seeds")):
        overrides["row_seeds"] = [int(s) for s in overrides["row_seeds"].tolist()]
    config.update(**overrides)
    return config


def load_generation_config(
    path: str | os.PathLike, config_class: type[_SamplerConfig], **download_kwargs
) -> _SamplerConfig:
    """``generation_config.json`` of a checkpoint (local folder or hub id) as ``config_class``.

    A checkpoint without one gets the defaults (published LLaDA folders carry a transformers one with
    only token ids; those load too).

    Raises:
        ValueError: naming the file, when a local generation_config.json is unreadable or invalid.
    """
    folder = Path(path) / (download_kwargs.get("subfolder") or "")
    if not folder.is_dir():
        try:
            return config_class.from_pretrained(str(path), **download_kwargs)
        except OSError:  # the hub repo has no generation_config.json
            return config_class.from_model_config(None)
    file = folder / GENERATION_CONFIG_NAME
    if not file.is_file():
        return config_class.from_model_config(None)
    try:
        config = config_class.from_pretrained(folder)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{file} is not a valid {config_class.__name__} ({reason}); fix the file, or delete it to "
            "sample with the defaults"
        ) from None
    return config
