"""lm-evaluation-harness models: ``flexmdm`` (FlexMDM checkpoints) and ``llada_mdm`` (LLaDA checkpoints).

Both implement the two request types a diffusion LM can serve:

- ``generate_until``: sample with the model's own sampler (``generate_flex`` / ``generate_mdm``), decode
  the generated tokens, cut the text at the first of the request's ``until`` strings;
- ``loglikelihood``: a Monte Carlo ELBO of the continuation given the context
  (:mod:`flexretrofit.lm_eval.likelihood`). ``is_greedy`` is always False (not computed).

``loglikelihood_rolling`` (perplexity tasks) raises NotImplementedError.

Model arguments (``--model_args key=value,...``): ``pretrained`` (checkpoint folder or hub id, required),
``tokenizer`` (default: ``pretrained``), ``batch_size`` (sequences per forward pass when scoring, prompts per
sampler call when generating), ``mc_num`` (Monte Carlo samples per loglikelihood request), ``seed``,
``device`` (default: cuda if available), ``dtype`` (``auto`` = bf16 on a GPU that has it, else fp32),
``max_gen_toks`` (used when a request gives none), ``add_bos_token`` and the sampler's own settings
(``steps``, ``confidence``, ... for ``flexmdm``; ``steps``, ``gen_length``, ``block_length``, ... for
``llada_mdm``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.lm_eval.likelihood import ELBOS, pair_seed
from flexretrofit.methods import Method
from flexretrofit.models import (
    CheckpointError,
    TokenizerLoadError,
    load_pretrained,
    load_tokenizer,
    read_model_type,
    resolve_dtype,
)
from flexretrofit.sampling import build_generation_config, sampling_method
from flexretrofit.sampling.sequences import canvas_limit
from flexretrofit.sampling.text import truncate_at_stop, with_stop_ids

logger = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256
# Arguments lm-eval may pass that have no meaning here.
_IGNORED_ARGS = ("trust_remote_code", "max_batch_size")
# A local tokenizer folder holds at least one of these.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class LMEvalSetupError(ValueError):
    """A model argument or checkpoint the adapter cannot run with; the message says what to do."""


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LMEvalSetupError(f"{name} must be a positive integer, got {value!r}")
    return value


class _DiffusionLM(LM):
    """What both models share: loading, tokenising, batching, stop strings, the cache hook."""

    checkpoint_type = ""  # config.json model_type this class loads
    method: Method  # how it samples and scores: a row of flexretrofit.sampling.SAMPLING_METHODS
    reserved_settings: tuple[str, ...] = ("row_seeds", "return_trace")
    _load_weights = True  # False only on the probe of check_model_args

    @classmethod
    def check_model_args(cls, **model_args: Any) -> None:
        """Every check of the constructor short of loading the weights: the arguments, config.json and the
        tokenizer. Raises what the constructor would (:class:`LMEvalSetupError`, ``FileNotFoundError``) in
        seconds, so ``python -m flexretrofit.lm_eval`` can refuse a mistake before lm-eval indexes its tasks."""
        probe = cls.__new__(cls)
        probe._load_weights = False
        probe.__init__(**model_args)

    def __init__(
        self,
        pretrained: str | nn.Module | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        batch_size: int | str = 8,
        mc_num: int = 128,
        seed: int = 0,
        device: str | None = None,
        dtype: str = "auto",
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        add_bos_token: bool = True,
        **sampler_settings: Any,
    ):
        super().__init__()
        if pretrained is None:
            raise LMEvalSetupError(
                "no checkpoint: pass --model_args pretrained=PATH (a checkpoint folder or hub id)"
            )
        for name in _IGNORED_ARGS:
            sampler_settings.pop(name, None)
        if isinstance(batch_size, str) and batch_size.startswith("auto"):
            raise LMEvalSetupError("batch_size=auto is not supported; pass an integer (e.g. --batch_size 8)")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.mc_num = _positive_int("mc_num", mc_num)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LMEvalSetupError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.add_bos_token = bool(add_bos_token)
        self.sampler_settings = self._check_sampler_settings(dict(sampler_settings))
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        if isinstance(pretrained, nn.Module):
            if tokenizer is None or isinstance(tokenizer, str):
                raise LMEvalSetupError("with a model object as pretrained, pass its tokenizer object too")
            self.model = pretrained.to(self._device).eval()
            self.tokenizer = tokenizer
        else:  # the cheap checks (config.json, tokenizer) before the weights load
            torch_dtype = self._check_checkpoint(str(pretrained), dtype)
            if isinstance(tokenizer, PreTrainedTokenizerBase):
                self.tokenizer = tokenizer
            else:
                self.tokenizer = self._load_tokenizer(str(tokenizer or pretrained))
            if not self._load_weights:
                return
            self.model = self._load_model(str(pretrained), torch_dtype)
        if self.tokenizer.mask_token_id != self.model.config.mask_token_id:
            raise LMEvalSetupError(
                f"the tokenizer's mask id {self.tokenizer.mask_token_id} is not the model's "
                f"{self.model.config.mask_token_id}; pass the model's own tokenizer (tokenizer=PATH)"
            )
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- setup
    def _check_sampler_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        config_class = sampling_method(self.method).config_class
        allowed = [f for f in config_class.sampler_fields if f not in (*self.reserved_settings, "seed")]
        unknown = sorted(set(settings) - set(config_class.sampler_fields))
        if unknown:
            raise LMEvalSetupError(
                f"model_args: {unknown} are not arguments of this model; it takes pretrained, tokenizer, "
                f"batch_size, mc_num, seed, device, dtype, max_gen_toks, add_bos_token and the {self.method} "
                f"sampler's {', '.join(allowed)}"
            )
        reserved = sorted(set(settings) & set(self.reserved_settings))
        if reserved:
            raise LMEvalSetupError(
                f"model_args: {reserved} are set per request by the adapter; leave them out "
                "(max_gen_toks bounds the response length)"
            )
        try:
            build_generation_config(self.method, settings)  # validates names and values early
        except ValueError as error:
            raise LMEvalSetupError(f"model_args: {error}") from None
        return settings

    def _check_checkpoint(self, path: str, dtype_name: str) -> torch.dtype:
        """The dtype to load ``path`` in, once its config.json names the model type this class loads."""
        try:
            dtype = resolve_dtype(dtype_name, self._device)
            model_type = read_model_type(path)  # FileNotFoundError for a folder without config.json
        except ValueError as error:  # not a dtype; config.json unreadable or not on the hub (CheckpointError)
            raise LMEvalSetupError(str(error)) from None
        if model_type != self.checkpoint_type:
            other = next((name for name, lm in LM_MODELS.items() if lm.checkpoint_type == model_type), None)
            hint = f"; use --model {other}" if other else ""
            raise LMEvalSetupError(
                f"{path} is a {model_type!r} checkpoint, this model loads {self.checkpoint_type!r} ones{hint}"
            )
        return dtype

    def _load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        try:
            model = load_pretrained(path, dtype=dtype)
        except CheckpointError as error:  # a missing config field, a truncated shard, keys that do not match
            raise LMEvalSetupError(str(error)) from None
        return model.to(self._device).eval()

    def _load_tokenizer(self, path: str) -> PreTrainedTokenizerBase:
        """The tokenizer at ``path``; missing or broken tokenizer files are one :class:`LMEvalSetupError`."""
        advice = "pass tokenizer=PATH (the model's tokenizer folder or hub id) in --model_args"
        folder = Path(path)
        if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise LMEvalSetupError(
                f"{path} has no tokenizer files ({' or '.join(_TOKENIZER_FILES)}); {advice}"
            )
        try:
            return load_tokenizer(path)
        except TokenizerLoadError as error:  # files absent on the hub, unreadable, no mask token
            raise LMEvalSetupError(f"{error}; {advice}") from None

    # ---------------------------------------------------------------- text <-> ids
    @property
    def prefix_token_id(self) -> int | None:
        """The token put before every context: BOS if the tokenizer has one, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_context(self, context: str) -> list[int]:
        """Context ids, after the prefix token when ``add_bos_token`` is set (or the context is empty)."""
        ids = self.encode(context)
        prefix = self.prefix_token_id
        if prefix is not None and (self.add_bos_token or not ids) and (not ids or ids[0] != prefix):
            ids = [prefix] + ids
        return ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, split so that no BPE merge crosses them the wrong way.

        Trailing spaces of the context move to the continuation; the whole string is encoded once and the
        continuation is what follows the context's own encoding.
        """
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self.encode_context(context)
        whole = self.encode_context(context + continuation)
        if whole[: len(context_ids)] == context_ids:
            return context_ids, whole[len(context_ids) :]
        return context_ids, self.encode(continuation)

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    # ---------------------------------------------------------------- requests
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Monte Carlo ELBO of each ``(context, continuation)``; ``is_greedy`` is always False."""
        pairs = [self._fit(*self.encode_pair(*request.args)) for request in requests]
        scores = self._elbo(pairs)
        results = []
        for request, score in zip(requests, scores):
            self.cache_hook.add_partial("loglikelihood", request.args, (score, False))
            results.append((score, False))
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        raise NotImplementedError(
            "loglikelihood_rolling (perplexity tasks) is not available for diffusion models here: a rolling "
            "window of ELBOs is not a meaningful perplexity. Use loglikelihood (multiple-choice) or "
            "generate_until tasks."
        )

    def generate_until(self, requests) -> list[str]:
        """Sample a response per request, decode it and cut it at the first of its ``until`` strings.

        Requests are grouped by their generation settings, sorted by prompt length and sampled
        ``batch_size`` at a time. A request's ``max_gen_toks`` (default: the model argument) bounds the
        number of generated tokens; see the subclass for what that means for its sampler. ``temperature``
        (with ``do_sample``) sets the sampler's temperature; other generation keywords are ignored, with a
        warning.
        """
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple[int, float], list[int]] = {}
        parsed, seen = [], {}
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            until, max_gen_toks, temperature = self._generation_kwargs(gen_kwargs)
            # Repeats of one request (lm-eval's `repeats`) are numbered, so that each gets its own draw.
            key = (context, json.dumps(gen_kwargs, sort_keys=True, default=str))
            occurrence = seen[key] = seen.get(key, -1) + 1
            parsed.append((context, until, occurrence))
            groups.setdefault((max_gen_toks, temperature), []).append(index)
        for (max_gen_toks, temperature), indices in groups.items():
            prompts = {i: self.encode_context(parsed[i][0]) for i in indices}
            indices.sort(key=lambda i: -len(prompts[i]))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                generated = self._generate(
                    [prompts[i] for i in chunk], max_gen_toks, temperature, [parsed[i][2] for i in chunk]
                )
                for i, ids in zip(chunk, generated):
                    text = truncate_at_stop(self.tok_decode(ids[:max_gen_toks]), parsed[i][1])
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    results[i] = text
        return results  # type: ignore[return-value]

    def _generation_kwargs(self, gen_kwargs: dict[str, Any] | None) -> tuple[list[str], int, float]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen_toks = _positive_int("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks))
        do_sample = kwargs.pop("do_sample", None)
        temperature = float(kwargs.pop("temperature", self.sampler_settings.get("temperature", 0.0)) or 0.0)
        if do_sample is False:
            temperature = 0.0
        unused = sorted(set(kwargs) - self._warned)
        if unused:
            logger.warning("generation keywords %s are ignored by the %s sampler", unused, self.method)
            self._warned.update(unused)
        return until, max_gen_toks, temperature

    # ---------------------------------------------------------------- per model
    @property
    def length_limit(self) -> int:
        """Positions the model holds: a FlexMDM's ``max_length``, a LLaDA's ``max_sequence_length``."""
        return canvas_limit(self.model)

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Drop the oldest context tokens until context + continuation fits the model."""
        limit = self.length_limit
        if len(continuation) > limit - 1:
            raise ValueError(
                f"a continuation of {len(continuation)} tokens does not fit the model's {limit} positions "
                "(with at least one context token)"
            )
        overflow = len(context) + len(continuation) - limit
        return (context[overflow:] if overflow > 0 else context), continuation

    def _elbo(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """The ELBO of each ``(context, continuation)`` under this model's method (:data:`ELBOS`)."""
        elbo = ELBOS[self.method]
        return elbo(self.model, pairs, mc_num=self.mc_num, batch_size=self.batch_size, seed=self.seed)

    def _generate(
        self, prompts: list[list[int]], max_gen_toks: int, temperature: float, occurrences: list[int]
    ) -> list[list[int]]:
        """Generated ids per prompt; ``occurrences[b]`` numbers the repeats of one prompt (0, 1, ...)."""
        raise NotImplementedError

    def _sample(self, prompts: list[list[int]], settings: dict[str, Any]) -> list[list[int]]:
        """Generated ids per prompt from this model's sampler with ``settings`` (its config's fields); a
        sampler that stops at stop ids stops at the tokenizer's (EOS and ``<|eot_id|>``) unless they are set."""
        method = sampling_method(self.method)
        settings = with_stop_ids(method, self.tokenizer, settings)
        config = build_generation_config(self.method, settings)
        return method.generate(self.model, prompts, generation_config=config).generated_ids()

    def get_model_info(self) -> dict[str, Any]:
        return {
            "model_class": type(self.model).__name__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "mc_num": self.mc_num,
            "sampler_settings": dict(self.sampler_settings),
        }


@register_model("flexmdm")
class FlexMDMLM(_DiffusionLM):
    """A FlexMDM checkpoint: flexible-length generation, FlexMDM ELBO with its insertion terms.

    ``max_gen_toks`` is an upper bound, not a target: the model chooses the response length, and the
    sampler's length cap is set to the batch's longest prompt + ``max_gen_toks`` (at most the model's
    ``max_length``); a response longer than ``max_gen_toks`` tokens is then cut to it. Each row's sampler
    seed is derived from ``seed``, its prompt and which repeat of that prompt it is, so a response does not
    depend on its batch. ``loglikelihood``: :func:`~flexretrofit.lm_eval.likelihood.flexmdm_elbo` (the
    bound and its formula are written out there).
    Sampler settings: the fields of :class:`~flexretrofit.sampling.FlexGenerationConfig`.
    """

    checkpoint_type = "flexmdm"
    method = "flexmdm"
    reserved_settings = ("row_seeds", "return_trace", "max_length")

    def _generate(self, prompts, max_gen_toks, temperature, occurrences):
        cap = self.length_limit
        room = min(max_gen_toks, cap - 1)
        prompts = [p[-(cap - room) :] for p in prompts]
        settings = {**self.sampler_settings, "temperature": temperature}
        settings["max_length"] = min(cap, max(len(p) for p in prompts) + room)
        settings["row_seeds"] = [(pair_seed(self.seed, p) + k) % 2**62 for p, k in zip(prompts, occurrences)]
        return self._sample(prompts, settings)


def mdm_lengths(settings: dict[str, Any], max_gen_toks: int) -> tuple[int, int, int]:
    """``(gen_length, block_length, steps)`` of LLaDA's sampler for a request (see :class:`LLaDAMDMLM`)."""
    gen_length = int(settings.get("gen_length", max_gen_toks))
    block_length = min(int(settings.get("block_length", 32)), gen_length)
    gen_length = -(-gen_length // block_length) * block_length
    blocks = gen_length // block_length
    # A task with short answers needs no more steps than tokens (the sampler refuses more).
    steps = min(int(settings.get("steps", gen_length)), gen_length)
    return gen_length, block_length, -(-steps // blocks) * blocks


@register_model("llada_mdm")
class LLaDAMDMLM(_DiffusionLM):
    """A LLaDA checkpoint: LLaDA's fixed-length sampler and the masked-diffusion ELBO.

    The sampler fills ``gen_length`` MASKs (model argument; default: the request's ``max_gen_toks``), rounded
    up to a multiple of ``block_length`` (default 32, or ``gen_length`` if smaller), with ``steps`` forward
    passes (default: one token per step) rounded up to a multiple of the number of blocks. As in LLaDA's
    reference nothing is suppressed by default: the response is cut at the first stop token (EOS, and
    ``<|eot_id|>`` when the tokenizer has it), to ``max_gen_toks`` tokens, then at the first ``until``
    string. One generator seeded with ``seed`` per sampler call (it draws nothing at temperature 0).
    ``loglikelihood``: :func:`~flexretrofit.lm_eval.likelihood.mdm_elbo`.
    Sampler settings: the fields of :class:`~flexretrofit.sampling.MDMGenerationConfig`.
    """

    checkpoint_type = "llada"
    method = "mdm"

    def _check_sampler_settings(self, settings):
        for name in ("gen_length", "block_length", "steps"):
            if name in settings:
                settings[name] = _positive_int(name, settings[name])
        gen_length, block_length, steps = mdm_lengths(settings, self.max_gen_toks)
        super()._check_sampler_settings(
            {**settings, "gen_length": gen_length, "block_length": block_length, "steps": steps}
        )
        return settings

    def _generate(self, prompts, max_gen_toks, temperature, occurrences):
        gen_length, block_length, steps = mdm_lengths(self.sampler_settings, max_gen_toks)
        limit = self.length_limit
        if gen_length >= limit:
            raise ValueError(f"gen_length={gen_length} leaves no room for a prompt in {limit} positions")
        prompts = [p[-(limit - gen_length) :] for p in prompts]
        settings = {**self.sampler_settings, "temperature": temperature, "seed": self.seed}
        settings.update(gen_length=gen_length, block_length=block_length, steps=steps)
        return self._sample(prompts, settings)


# The lm-eval model names this package registers (``--model NAME``).
LM_MODELS: dict[str, type[_DiffusionLM]] = {"flexmdm": FlexMDMLM, "llada_mdm": LLaDAMDMLM}
