"""Monte Carlo ELBOs of a continuation given a context, computed with the models' own training losses.

Both estimators draw the noise with the training collators (:class:`~flexretrofit.data.MDMCollator`,
:class:`~flexretrofit.data.FlexMDMCollator`): the context is the protected prompt, so only continuation
tokens are ever masked (or deleted), and ``mc_num`` copies of the pair get times stratified over
``[eps, 1 - eps]``. Each copy is scored with the training loss un-normalised (summed over its tokens and
slots), and the ELBO is minus the mean over the copies:

- MDM (LLaDA): ``log p(y | c) >= E_t E_{x_t} [ sum_{masked j} (1 / t) log p(y_j | c, x_t) ]`` with
  ``t ~ U(0, 1)`` and every continuation token masked independently with probability ``t``
  (:func:`~flexretrofit.diffusion.mdm_loss` with weights ``1 / t``).
- FlexMDM: see :func:`flexmdm_elbo`.

The noise of a pair depends only on ``seed`` and the context's token ids (a hash of both seeds the collator),
so the result does not depend on batching or request order, and the answer choices of one question share
their noise: comparing them is less noisy than comparing independent estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flexretrofit.data.collator import FlexMDMCollator, MDMCollator
from flexretrofit.diffusion import flexmdm_loss, mdm_loss
from flexretrofit.methods import Method
from flexretrofit.utils import derive_seed, model_device

TokenPair = tuple[Sequence[int], Sequence[int]]
# Per-row batch fields and how they are padded when rows of several pairs share one forward pass.
_ROW_FIELDS = ("xt", "xt_attention_mask", "logits_positions")
_SLOT_FIELDS = ("slot_gaps", "slot_valid")


def pair_seed(seed: int, context_ids: Sequence[int]) -> int:
    """A 62-bit seed from ``seed`` and the context's ids: pairs with the same context share their noise."""
    return derive_seed(f"{int(seed)}|" + ",".join(str(int(i)) for i in context_ids), bits=62)


def mdm_elbo(
    model: nn.Module,
    pairs: Sequence[TokenPair],
    *,
    mc_num: int = 128,
    batch_size: int = 32,
    seed: int = 0,
) -> list[float]:
    """Monte Carlo ELBO of each continuation given its context under a LLaDA-style MDM.

    ``ELBO = -(1 / mc_num) sum_k sum_{masked j} CE(logits_j, y_j) / t_k``: LLaDA's training loss
    (:class:`~flexretrofit.training.objectives.MDMObjective`) of each noised copy, summed instead of
    normalised. The canvas is exactly ``context + continuation`` (no padding after it), so this is the
    likelihood of the continuation given its length, as in LLaDA's own evaluation.

    Args:
        model: a :class:`~flexretrofit.models.LLaDAModelLM` (``model(input_ids, attention_mask, logits_positions)``).
        pairs: ``(context_ids, continuation_ids)`` per request; context + continuation must fit
            ``model.config.max_sequence_length``.
        mc_num: noised copies per pair (Monte Carlo samples).
        batch_size: sequences per forward pass (copies of several pairs may share one).
        seed: base seed of the noise.

    Returns:
        One float per pair (a log-likelihood bound in nats, <= 0).
    """
    config = model.config
    _check_pairs(pairs, int(config.max_sequence_length), "model.config.max_sequence_length")

    def noise(pair: TokenPair) -> dict[str, Tensor]:
        collator = MDMCollator.for_model(config, seed=pair_seed(seed, pair[0]))
        return collator([_sample(pair)] * mc_num, step=0)

    def score(batch: dict[str, Tensor]) -> Tensor:
        logits = model(
            input_ids=batch["xt"],
            attention_mask=batch["xt_attention_mask"],
            logits_positions=batch["logits_positions"],
        ).logits  # [N, V]
        return torch.stack(
            [
                mdm_loss(logits[rows], batch["masked_targets"][rows], batch["masked_weights"][rows], 1.0)
                for rows in _rows_of(batch)
            ]
        )

    return _estimate(model, pairs, mc_num, batch_size, noise, score, config.pad_token_id)


def flexmdm_elbo(
    model: nn.Module,
    pairs: Sequence[TokenPair],
    *,
    mc_num: int = 128,
    batch_size: int = 32,
    seed: int = 0,
) -> list[float]:
    """Monte Carlo ELBO of each continuation (as the whole response) given its context under a FlexMDM.

    With the context as the protected prompt, ``x1 = context + y``, and the model's rates (unmask
    ``kappa_beta(t) p_theta``, insert ``kappa_alpha(t) g_hat_i``), the KL between the interpolant's path
    measure and the model's gives

        log p(y | c) >= -int_0^1 E_{x_t} [ sum_{MASK j} kappa_beta(t) CE(logits_j, x1[s_t[j]])
                                          + sum_{slots i >= |c|} kappa_alpha(t) D(g_i, g_hat_i) ] dt,

    ``D(x, y) = y - x + x (ln x - ln y)``: the FlexMDM training loss with ELBO weights
    (:func:`~flexretrofit.diffusion.flexmdm_loss`, ``insertion_weighting="elbo"``), summed instead of
    normalised. The insertion terms are included: they score the length and where the tokens go, so an
    empty continuation still has a bound (``-int kappa_alpha(t) g_hat dt``: the chance that the model
    inserts nothing after the context). Only the slots from ``|c|`` on count (those the sampler inserts
    into; it never inserts inside the prompt, where ``g = 0`` anyway). Times are stratified over
    ``[1e-3, 1 - 1e-3]`` as in training.

    The bound is exact in its construction for schedules without atoms (``alpha(0) = 0``, ``alpha(1) = 1``,
    e.g. linear). The published geometric insertion schedule has ``alpha(0) = 4.5e-5`` and
    ``alpha(1) = 0.990``: tokens placed by those atoms (about 1 % of the continuation, at ``t = 1``) enter
    through jumps that the rate integral does not see, and the estimate leaves those boundary terms out.

    Args:
        model: a :class:`~flexretrofit.models.FlexMDMForMaskedDiffusion`.
        pairs: ``(context_ids, continuation_ids)``; context + continuation must fit ``model.config.max_length``.
        mc_num, batch_size, seed: as for :func:`mdm_elbo`.

    Returns:
        One float per pair (nats, <= 0).
    """
    config = model.config
    _check_pairs(pairs, int(config.max_length), "model.config.max_length")
    insertion_schedule, unmask_schedule = model.insertion_schedule, model.unmask_schedule

    def noise(pair: TokenPair) -> dict[str, Tensor]:
        collator = FlexMDMCollator.for_model(config, seed=pair_seed(seed, pair[0]))
        batch = collator([_sample(pair)] * mc_num, step=0)
        slots = torch.arange(batch["slot_valid"].shape[1])
        batch["slot_valid"] = batch["slot_valid"] & (slots[None] >= len(pair[0]))
        return batch

    def score(batch: dict[str, Tensor]) -> Tensor:
        out = model(
            batch["xt"],
            batch["t"],
            attention_mask=batch["xt_attention_mask"],
            logits_positions=batch["logits_positions"],
        )
        losses = []
        for b, rows in enumerate(_rows_of(batch)):
            loss = flexmdm_loss(
                out.logits[rows],
                batch["masked_targets"][rows],
                torch.zeros_like(batch["masked_targets"][rows]),
                out.expected_gaps[b : b + 1],
                batch["slot_gaps"][b : b + 1],
                batch["slot_valid"][b : b + 1],
                batch["t"][b : b + 1],
                insertion_schedule,
                unmask_schedule,
                normalizer=1.0,
                insertion_weighting="elbo",
            )
            losses.append(loss.loss)
        return torch.stack(losses)

    return _estimate(model, pairs, mc_num, batch_size, noise, score, config.pad_token_id)


# The ELBO each method scores a continuation with.
ELBOS: dict[Method, Callable[..., list[float]]] = {"flexmdm": flexmdm_elbo, "mdm": mdm_elbo}


# ------------------------------------------------------------------------------------------------
# shared machinery
# ------------------------------------------------------------------------------------------------
def _sample(pair: TokenPair) -> dict[str, list]:
    context, continuation = list(pair[0]), list(pair[1])
    return {
        "input_ids": context + continuation,
        "prompt_mask": [True] * len(context) + [False] * len(continuation),
    }


def _check_pairs(pairs: Sequence[TokenPair], limit: int, limit_name: str) -> None:
    for index, (context, continuation) in enumerate(pairs):
        total = len(context) + len(continuation)
        if total == 0:
            raise ValueError(
                f"pair {index} has an empty context and an empty continuation; nothing to score."
            )
        if total > limit:
            raise ValueError(
                f"pair {index} has {total} tokens, above {limit_name}={limit}; truncate the context first."
            )


def _rows_of(batch: dict[str, Tensor]) -> list[Tensor]:
    """For each row ``b``, the indices of its MASK positions in the row-major ``[N]`` logits."""
    rows = batch["masked_row"]
    return [(rows == b).nonzero(as_tuple=True)[0] for b in range(batch["xt"].shape[0])]


def _split_rows(batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """A collated batch -> one dict per row (trimmed to its own length; MASK targets and weights kept)."""
    rows = []
    for b, masked in enumerate(_rows_of(batch)):
        length = int(batch["xt_attention_mask"][b].sum())
        row = {name: batch[name][b, :length] for name in _ROW_FIELDS}
        row.update({name: batch[name][b, : length + 1] for name in _SLOT_FIELDS if name in batch})
        row["t"] = batch["t"][b]
        row["masked_targets"] = batch["masked_targets"][masked]
        if "masked_weights" in batch:
            row["masked_weights"] = batch["masked_weights"][masked]
        rows.append(row)
    return rows


def _merge_rows(rows: list[dict[str, Tensor]], pad_token_id: int, device: torch.device) -> dict[str, Tensor]:
    """Rows of possibly different lengths -> one right-padded batch (the layout the collators produce)."""
    width = max(1, max(len(row["xt"]) for row in rows))
    pad_values = {"xt": pad_token_id, "xt_attention_mask": False, "logits_positions": False}
    pad_values.update({"slot_gaps": 0, "slot_valid": False})
    batch: dict[str, Tensor] = {}
    for name, value in pad_values.items():
        if name not in rows[0]:
            continue
        extra = 1 if name in _SLOT_FIELDS else 0
        padded = [
            torch.nn.functional.pad(row[name], (0, width + extra - len(row[name])), value=value)
            for row in rows
        ]
        batch[name] = torch.stack(padded)
    batch["t"] = torch.stack([row["t"] for row in rows])
    batch["masked_targets"] = torch.cat([row["masked_targets"] for row in rows])
    batch["masked_row"] = torch.cat(
        [torch.full((len(row["masked_targets"]),), b, dtype=torch.long) for b, row in enumerate(rows)]
    )
    if "masked_weights" in rows[0]:
        batch["masked_weights"] = torch.cat([row["masked_weights"] for row in rows])
    return {name: value.to(device) for name, value in batch.items()}


def _estimate(
    model: nn.Module,
    pairs: Sequence[TokenPair],
    mc_num: int,
    batch_size: int,
    noise: Callable[[TokenPair], dict[str, Tensor]],
    score: Callable[[dict[str, Tensor]], Tensor],
    pad_token_id: int,
) -> list[float]:
    """Noise every pair (``mc_num`` rows each, on CPU), score rows ``batch_size`` at a time, average per pair."""
    for name, value in (("mc_num", mc_num), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    device = model_device(model)
    totals = [0.0] * len(pairs)
    # Longest pairs first, so that rows sharing a forward pass have similar lengths.
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    pending: list[tuple[int, dict[str, Tensor]]] = []

    def flush(count: int) -> None:
        chunk, pending[:] = pending[:count], pending[count:]
        losses = score(_merge_rows([row for _, row in chunk], pad_token_id, device)).double().cpu()
        for (index, _), loss in zip(chunk, losses.tolist()):
            totals[index] += loss

    with torch.no_grad():
        for index in order:
            pending.extend((index, row) for row in _split_rows(noise(pairs[index])))
            while len(pending) >= batch_size:
                flush(batch_size)
        while pending:
            flush(batch_size)
    return [0.0 - total / mc_num for total in totals]  # 0.0 - x: no -0.0 for an empty continuation
