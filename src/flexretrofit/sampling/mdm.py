"""The fixed-length MDM baseline: LLaDA's semi-autoregressive low-confidence remasking sampler, vectorised.

Canvas = prompt + ``gen_length`` MASKs (prefix + MASKs + suffix when infilling). The MASKs are filled in
blocks of ``block_length`` from left to right; each block gets ``steps / num_blocks`` forward passes. Per
block, with ``n`` MASKs and ``s`` steps, step ``i`` unmasks ``n // s`` tokens plus one for the first
``n % s`` steps (LLaDA's rule). Each step:

- logits of the whole canvas (with classifier-free guidance: ``un + (cfg + 1)(cond - un)``, the
  unconditional input having every prompt token replaced by MASK); suppressed ids (and MASK) get -inf;
- candidate tokens = argmax of the logits, or of LLaDA's Gumbel-perturbed ``exp(logits) / (-log U)^T``
  in float64 when ``temperature > 0``;
- confidence = softmax probability of the candidate (``low_confidence``) or a uniform draw (``random``);
  positions outside the current block, or not MASK, have -inf;
- the ``k`` most confident positions of each row take their candidates (per-row ``k``: sort + rank).

Differences from the published loop, all output-preserving: rows may have prompts of different lengths
(each row's blocks start after its own prompt; padding keys are masked); Gumbel noise and random
confidences are drawn for the current block only (``[B, block_length, V]`` / ``[B, block_length]``,
in that order per step, from the one generator), since no other position can be unmasked; MASK is never
emitted (a trained model never predicts it; the published loop would leave such a position masked). As in
the published loop nothing else is suppressed by default; ``suppress_tokens`` really suppresses every
listed id.

The model is a :class:`~flexretrofit.models.LLaDAModelLM` (``model(ids, attention_mask=...).logits``) or
a FlexMDM used as a fixed-length MDM: it gets ``t`` = the fraction of the row's generated region
already unmasked, and its ``expected_gaps`` are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexretrofit.sampling.config import MDMGenerationConfig, resolve_generation_config
from flexretrofit.sampling.sequences import (
    GenerationOutput,
    GenerationStep,
    TokenRows,
    canvas_limit,
    check_rows_have_tokens,
    check_token_ids,
    compact_rows,
    empty_output,
    has_insertion_head,
    infill_rows,
    prompt_rows,
)
from flexretrofit.utils import model_device


def generate_mdm(
    model: nn.Module,
    input_ids: TokenRows,
    attention_mask: Tensor | None = None,
    generation_config: MDMGenerationConfig | None = None,
    **kwargs,
) -> GenerationOutput:
    """Fill ``gen_length`` MASKs after each prompt with LLaDA's sampler.

    Args:
        model: a LLaDA model or a FlexMDM (see the module docstring).
        input_ids: prompts: ``[B, L]`` tensor (padding marked by ``attention_mask``, either side) or a list
            of id lists/tensors.
        attention_mask: ``[B, L]``, 1 at real prompt tokens; None = all real.
        generation_config: a :class:`MDMGenerationConfig`; None = ``model.generation_config`` when it is one
            (a LLaDA model's saved config), else the defaults.
        **kwargs: override config fields for this call, plus ``generator``: the ``torch.Generator`` for
            Gumbel noise and random remasking (default: one seeded with ``config.seed``).

    Returns:
        :class:`GenerationOutput` (``sequences [B, L']`` = prompt + response, cut before the first stop token:
        ``config.eos_token_id``, default the model's EOS, or PAD).
        An empty batch gives an empty output (``sequences`` ``[0, 0]``).

    Raises:
        ValueError: on an empty prompt, a prompt holding the MASK id or an id outside the vocabulary, a
            canvas above the model's limit, or an invalid config.
    """
    generator = kwargs.pop("generator", None)
    config = resolve_generation_config(generation_config, MDMGenerationConfig, kwargs, model)
    prompts = prompt_rows(input_ids, attention_mask)
    return _sample(model, prompts, [p.new_empty(0) for p in prompts], config, generator, infilling=False)


def infill_mdm(
    model: nn.Module,
    prefix_ids: TokenRows,
    suffix_ids: TokenRows,
    generation_config: MDMGenerationConfig | None = None,
    **kwargs,
) -> GenerationOutput:
    """Fill ``gen_length`` MASKs between each prefix and suffix with LLaDA's sampler.

    Stop tokens generated inside the middle (unless suppressed) are dropped from it, so a
    middle may come out shorter than ``gen_length``. Returns :class:`GenerationOutput` with ``middles``.
    """
    generator = kwargs.pop("generator", None)
    config = resolve_generation_config(generation_config, MDMGenerationConfig, kwargs, model)
    rows = infill_rows(prefix_ids, suffix_ids)
    check_rows_have_tokens(rows, "generate_mdm")
    prefixes, suffixes = [prefix for prefix, _ in rows], [suffix for _, suffix in rows]
    output = _sample(model, prefixes, suffixes, config, generator, infilling=True)
    output.middles = output.generated_ids()
    return output


def _ids_list(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _logits(model: nn.Module, ids: Tensor, attention_mask: Tensor | None, t: Tensor) -> Tensor:
    """Canvas logits ``[B, L, V]``; ``t`` ``[B]`` is used by a FlexMDM only."""
    if has_insertion_head(model):
        return model(ids, t, attention_mask).logits
    return model(ids, attention_mask=attention_mask).logits


def transfer_counts(num_masks: Tensor, steps: int) -> Tensor:
    """LLaDA's per-step unmask counts: ``[B]`` MASKs in a block -> ``[B, steps]`` (base + 1 for the first remainder steps)."""
    base, remainder = num_masks // steps, num_masks % steps
    step_index = torch.arange(steps, device=num_masks.device)
    return base[:, None] + (step_index[None] < remainder[:, None]).long()


def _sample(
    model: nn.Module,
    prefixes: list[Tensor],
    suffixes: list[Tensor],
    config: MDMGenerationConfig,
    generator: torch.Generator | None,
    infilling: bool,
) -> GenerationOutput:
    model_config = model.config
    device = model_device(model)
    mask_id, pad_id = model_config.mask_token_id, model_config.pad_token_id
    gen_length, block_length = config.gen_length, config.block_length
    limit = canvas_limit(model)
    batch = len(prefixes)
    if batch == 0:
        return empty_output(device, config.return_trace)
    check_token_ids([torch.cat([prefix, suffix]) for prefix, suffix in zip(prefixes, suffixes)], model_config)

    prefix_lengths = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
    suffix_lengths = torch.tensor([len(s) for s in suffixes], dtype=torch.long)
    lengths = prefix_lengths + gen_length + suffix_lengths
    width = int(lengths.max())
    if width > limit:
        raise ValueError(
            f"the canvas needs {width} positions (prompt + gen_length), above the model's limit of {limit}; "
            "shorten the prompt or lower gen_length."
        )
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    for b, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
        if bool((prefix == mask_id).any()) or bool((suffix == mask_id).any()):
            raise ValueError(f"row {b} holds the MASK id {mask_id} in its prompt; remove it.")
        start = len(prefix) + gen_length
        ids[b, : len(prefix)] = prefix
        ids[b, len(prefix) : start] = mask_id
        ids[b, start : start + len(suffix)] = suffix
    ids = ids.to(device)
    prefix_lengths, suffix_lengths, lengths = (
        x.to(device) for x in (prefix_lengths, suffix_lengths, lengths)
    )
    positions = torch.arange(width, device=device)
    valid = positions[None] < lengths[:, None]
    attention_mask = None if bool(valid.all()) else valid  # equal lengths: call the model exactly as LLaDA
    generated = (positions[None] >= prefix_lengths[:, None]) & (
        positions[None] < (prefix_lengths + gen_length)[:, None]
    )
    protected = valid & ~generated

    # Like LLaDA's generate.py nothing is suppressed by default: the model may end its answer with EOS.
    forbidden = torch.tensor(
        sorted({mask_id, *(config.suppress_tokens or [])}), dtype=torch.long, device=device
    )
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    trace = [GenerationStep(0, 0.0, ids.cpu(), lengths.cpu())] if config.return_trace else None
    steps_per_block = config.steps // config.num_blocks
    offsets = torch.arange(block_length, device=device)
    step_number = 0
    with torch.no_grad():
        for block in range(config.num_blocks):
            block_index = prefix_lengths[:, None] + block * block_length + offsets[None]  # [B, bl]
            counts = transfer_counts((ids.gather(1, block_index) == mask_id).sum(dim=1), steps_per_block)
            for i in range(steps_per_block):
                before = ids
                ids = _mdm_step(
                    model,
                    ids,
                    attention_mask,
                    protected,
                    block_index,
                    counts[:, i],
                    forbidden,
                    config,
                    generator,
                )
                step_number += 1
                if trace is not None:
                    t = (step_number - 1) / config.steps
                    trace.append(_trace_entry(step_number, t, before, ids, lengths, valid, mask_id))

    stop_ids = model_config.eos_token_id if config.eos_token_id is None else config.eos_token_id
    stops = torch.tensor(sorted({pad_id, *_ids_list(stop_ids)}), device=device)
    is_stop = torch.isin(ids, stops) & generated
    if infilling:
        keep = valid & ~is_stop
    else:  # the response ends at its first stop token
        keep = valid & ~(generated & (is_stop.long().cumsum(dim=1) > 0))
    sequences, out_lengths = compact_rows(ids, keep, pad_id)
    return GenerationOutput(
        sequences=sequences,
        lengths=out_lengths,
        prompt_lengths=prefix_lengths,
        suffix_lengths=suffix_lengths,
        trace=trace,
    )


def _mdm_step(
    model: nn.Module,
    ids: Tensor,
    attention_mask: Tensor | None,
    protected: Tensor,
    block_index: Tensor,
    count: Tensor,
    forbidden: Tensor,
    config: MDMGenerationConfig,
    generator: torch.Generator,
) -> Tensor:
    """One LLaDA step: ids ``[B, L]`` -> ids with ``count[b]`` more MASKs of the block ``block_index [B, bl]`` filled."""
    mask_id = model.config.mask_token_id
    is_mask = ids == mask_id
    gen_length = config.gen_length
    # FlexMDM as MDM: t = fraction of the generated region already unmasked.
    t = 1.0 - is_mask.sum(dim=1).float() / gen_length
    if config.cfg_scale > 0:
        unconditional = ids.masked_fill(protected, mask_id)
        both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        logits = _logits(model, torch.cat([ids, unconditional]), both_mask, torch.cat([t, t]))
        cond, uncond = logits.chunk(2, dim=0)
        logits = uncond + (config.cfg_scale + 1) * (cond - uncond)
    else:
        logits = _logits(model, ids, attention_mask, t)
    vocab = logits.shape[-1]
    block_logits = logits.gather(1, block_index[..., None].expand(-1, -1, vocab))  # [B, bl, V]
    block_logits = block_logits.index_fill(-1, forbidden, float("-inf"))

    if config.temperature > 0:
        block_logits = block_logits.double()
        noise = torch.rand(block_logits.shape, generator=generator, dtype=torch.float64, device=ids.device)
        candidates = (block_logits.exp() / (-torch.log(noise)) ** config.temperature).argmax(dim=-1)
    else:
        candidates = block_logits.argmax(dim=-1)  # [B, bl]
    if config.remasking == "low_confidence":
        probs = F.softmax(block_logits.double(), dim=-1)
        confidence = probs.gather(-1, candidates[..., None]).squeeze(-1)
    else:
        confidence = torch.rand(candidates.shape, generator=generator, dtype=torch.float64, device=ids.device)

    block_ids = ids.gather(1, block_index)
    block_is_mask = block_ids == mask_id
    confidence = confidence.masked_fill(~block_is_mask, float("-inf"))
    order = torch.sort(confidence, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=ids.device).expand_as(order)
    )
    select = block_is_mask & (rank < count[:, None])
    return ids.scatter(1, block_index, torch.where(select, candidates, block_ids))


def _trace_entry(
    step: int, t: float, before: Tensor, after: Tensor, lengths: Tensor, valid: Tensor, mask_id: int
) -> GenerationStep:
    """Trace entry of a fixed-length step: nothing moves or is inserted."""
    positions = torch.arange(before.shape[1], device=before.device).expand_as(before)
    unmasked = (before == mask_id) & (after != mask_id)
    return GenerationStep(
        step,
        t,
        after.cpu(),
        lengths.cpu(),
        torch.where(valid, positions, -1).cpu(),
        unmasked.cpu(),
        torch.zeros_like(unmasked).cpu(),
    )
