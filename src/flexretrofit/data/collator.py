"""Collators: pad samples into a batch and draw the diffusion noise the model and the loss train on.

:class:`FlexMDMCollator` draws the FlexMDM joint interpolant (tokens deleted and masked);
:class:`MDMCollator` draws LLaDA's masking on a fixed canvas for the baseline. Both draw times
stratified over the *global* batch: every rank seeds the time generator from ``(seed, step)`` alone,
so the ranks share one low-discrepancy grid and each takes its own share of it. The token-level noise
is seeded from ``(seed, step, rank)`` so ranks do not repeat one another's noise.

Batch walk-through (FlexMDM)::

    batch = collator(samples)                       # or collator.noise(collator.pad(samples), step)
    out = model(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"],
                logits_positions=batch["logits_positions"])
    loss = flexmdm_loss(out.logits, batch["masked_targets"], batch["masked_row"], out.expected_gaps,
                        batch["slot_gaps"], batch["slot_valid"], batch["t"], alpha, beta,
                        normalizer=batch["num_loss_tokens"])   # or the global count
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from flexretrofit.diffusion.interpolant import (
    masked_positions_and_targets,
    sample_interpolant,
    stratified_times,
)
from flexretrofit.diffusion.schedules import Schedule, build_schedule
from flexretrofit.utils import check_rank, derive_seed


def _generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from integers (``derive_seed``: unrelated seeds for different tuples)."""
    return torch.Generator().manual_seed(derive_seed(*(int(part) for part in parts)))


def pad_samples(samples: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad samples ``{"input_ids", "prompt_mask" (optional: no prompt)}`` to the longest.

    Returns:
        ``x1`` ``[B, L]`` long (pad id after each sample), ``x1_attention_mask`` ``[B, L]`` bool,
        ``prompt_mask`` ``[B, L]`` bool (False at padding).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples.")
    ids = [torch.as_tensor(s["input_ids"], dtype=torch.long).reshape(-1) for s in samples]
    width = max(len(x) for x in ids)
    if width == 0:
        raise ValueError("every sample in the batch is empty; filter empty samples out of the dataset.")
    x1 = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(ids), width, dtype=torch.bool)
    prompt_mask = torch.zeros(len(ids), width, dtype=torch.bool)
    for row, (sample, row_ids) in enumerate(zip(samples, ids)):
        n = len(row_ids)
        x1[row, :n] = row_ids
        attention_mask[row, :n] = True
        if sample.get("prompt_mask") is not None:
            row_prompt = torch.as_tensor(sample["prompt_mask"], dtype=torch.bool).reshape(-1)
            if len(row_prompt) != n:
                raise ValueError(
                    f"sample {row} has {n} input_ids but {len(row_prompt)} prompt_mask entries; they must match."
                )
            prompt_mask[row, :n] = row_prompt
    return {"x1": x1, "x1_attention_mask": attention_mask, "prompt_mask": prompt_mask}


class _StepCountingCollator:
    """Shared step bookkeeping: the noise of a batch is a function of (seed, step, rank) only."""

    def __init__(
        self, pad_token_id: int, mask_token_id: int, rank: int, world_size: int, seed: int, eps: float
    ):
        if pad_token_id == mask_token_id:
            raise ValueError(f"pad_token_id and mask_token_id are both {pad_token_id}; they must differ.")
        check_rank(rank, world_size)
        self.pad_token_id = pad_token_id
        self.mask_token_id = mask_token_id
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.eps = eps
        self.step = 0

    def pad(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """Only the padding (:func:`pad_samples`): use as a DataLoader worker's ``collate_fn`` and call
        :meth:`noise` with the step in the training loop."""
        return pad_samples(samples, self.pad_token_id)

    def noise(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __call__(self, samples: Sequence[Mapping[str, Any]], step: int | None = None) -> dict[str, Tensor]:
        """Pad and noise ``samples``; ``step`` defaults to the collator's own counter, which then advances."""
        if step is None:
            if get_worker_info() is not None:
                raise RuntimeError(
                    f"{type(self).__name__} counts steps itself, but DataLoader workers each hold a copy of it. "
                    "With num_workers > 0 pass collate_fn=collator.pad and call collator.noise(batch, step) in "
                    "the training loop; or use num_workers=0."
                )
            step = self.step
            self.step += 1
        return self.noise(self.pad(samples), step)

    def _times(self, batch_size: int, step: int) -> Tensor:
        # Same (seed, step) on every rank -> one stratified grid over the global batch.
        return stratified_times(
            batch_size,
            rank=self.rank,
            world_size=self.world_size,
            generator=_generator(self.seed, step),
            eps=self.eps,
        )

    def state_dict(self) -> dict[str, int]:
        """The step counter (for resuming a run with identical noise)."""
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if "seed" in state and state["seed"] != self.seed:
            raise ValueError(
                f"collator state has seed {state['seed']}, this collator {self.seed}; use the same seed."
            )
        self.step = int(state["step"])


class FlexMDMCollator(_StepCountingCollator):
    """Pad samples and draw the FlexMDM joint interpolant (method doc, sections 2-4).

    Args:
        pad_token_id / mask_token_id: from the model config (one source of truth).
        insertion_schedule / unmask_schedule: ``alpha`` and ``beta``; pass ``model.insertion_schedule``
            and ``model.unmask_schedule`` so training, loss and sampling share them.
        rank / world_size: this process among the data-parallel ranks (times are stratified over all).
        seed: base seed of the noise.
        eps: times lie in ``[eps, 1 - eps]``.

    ``__call__(samples)`` returns, with ``B`` rows and ``L`` the longest ``x_t`` in the batch (``x_t`` is
    usually much shorter than ``x1``, and the model runs on ``x_t``):

    - ``xt`` ``[B, L]`` long, ``xt_attention_mask`` ``[B, L]`` bool, ``t`` ``[B]`` float32;
    - ``logits_positions`` ``[B, L]`` bool: the MASK positions of ``xt`` (where the model needs logits);
    - ``masked_targets`` ``[N]`` long and ``masked_row`` ``[N]`` long: the clean token and the row of each
      MASK position, in row-major order like ``xt[logits_positions]``;
    - ``slot_gaps`` ``[B, L+1]`` long, ``slot_valid`` ``[B, L+1]`` bool: insertion-head targets;
    - ``non_prompt_lengths`` ``[B]`` long and ``num_loss_tokens`` (long scalar): non-prompt real tokens
      of ``x1``, the loss normaliser (sum it over ranks and accumulation steps for the global one).
    """

    def __init__(
        self,
        pad_token_id: int,
        mask_token_id: int,
        insertion_schedule: Schedule | str | dict,
        unmask_schedule: Schedule | str | dict,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        eps: float = 1e-3,
    ):
        super().__init__(pad_token_id, mask_token_id, rank, world_size, seed, eps)
        self.insertion_schedule = build_schedule(insertion_schedule)
        self.unmask_schedule = build_schedule(unmask_schedule)

    @classmethod
    def for_model(cls, model_config: Any, **kwargs: Any) -> FlexMDMCollator:
        """The collator of a FlexMDM: its token ids and schedules from ``model_config`` (one source of truth);
        ``kwargs`` (``rank``, ``world_size``, ``seed``, ``eps``) as for the constructor."""
        return cls(
            model_config.pad_token_id,
            model_config.mask_token_id,
            model_config.insertion_schedule,
            model_config.unmask_schedule,
            **kwargs,
        )

    def noise(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        """Draw times and the interpolant for a padded ``batch`` (see :meth:`pad`) at ``step``."""
        x1 = batch["x1"]
        t = self._times(x1.shape[0], step)
        sample = sample_interpolant(
            x1,
            batch["x1_attention_mask"],
            batch["prompt_mask"],
            t,
            self.insertion_schedule,
            self.unmask_schedule,
            mask_token_id=self.mask_token_id,
            pad_token_id=self.pad_token_id,
            generator=_generator(self.seed, step, self.rank, 1),
        )
        # Deleted tokens shorten every row: run the model on the longest x_t, not on x1's width.
        width = max(1, int(sample.lengths.max()))
        logits_positions, masked_targets, masked_row = masked_positions_and_targets(sample)
        return {
            "xt": sample.xt[:, :width],
            "xt_attention_mask": sample.xt_attention_mask[:, :width],
            "t": t,
            "logits_positions": logits_positions[:, :width],
            "masked_targets": masked_targets,
            "masked_row": masked_row,
            "slot_gaps": sample.slot_gaps[:, : width + 1],
            "slot_valid": sample.slot_valid[:, : width + 1],
            "non_prompt_lengths": sample.non_prompt_lengths,
            "num_loss_tokens": sample.non_prompt_lengths.sum(),
        }


class MDMCollator(_StepCountingCollator):
    """Pad samples and draw LLaDA's masking, for the MDM baseline.

    Per row a time ``t`` (stratified over the global batch, in ``[eps, 1 - eps]``); every non-prompt
    real token is replaced by MASK independently with probability ``t``. The loss is
    ``sum over MASK of CE / t``, divided by ``num_loss_tokens``. Samples are usually already on a fixed
    canvas (:class:`~flexretrofit.data.formats.FixedCanvasFormat`: EOS padding is real, trained
    text); any remaining length differences are padded with ``pad_token_id`` and never trained.

    ``__call__(samples)`` returns ``xt`` ``[B, L]``, ``xt_attention_mask`` ``[B, L]``, ``t`` ``[B]``,
    ``logits_positions`` ``[B, L]``, ``masked_targets`` ``[N]``, ``masked_row`` ``[N]``,
    ``masked_weights`` ``[N]`` (``1 / t`` of the row), ``non_prompt_lengths`` ``[B]``, ``num_loss_tokens``.
    """

    def __init__(
        self,
        pad_token_id: int,
        mask_token_id: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        eps: float = 1e-3,
    ):
        super().__init__(pad_token_id, mask_token_id, rank, world_size, seed, eps)

    @classmethod
    def for_model(cls, model_config: Any, **kwargs: Any) -> MDMCollator:
        """The collator of a LLaDA MDM: its token ids from ``model_config``; ``kwargs`` as for the constructor."""
        return cls(model_config.pad_token_id, model_config.mask_token_id, **kwargs)

    def noise(self, batch: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        """Draw times and masks for a padded ``batch`` (see :meth:`pad`) at ``step``."""
        x1, attention_mask, prompt_mask = batch["x1"], batch["x1_attention_mask"], batch["prompt_mask"]
        t = self._times(x1.shape[0], step)
        trainable = attention_mask & ~prompt_mask
        draws = torch.rand(x1.shape, generator=_generator(self.seed, step, self.rank, 1))
        is_masked = trainable & (draws < t[:, None])
        xt = torch.where(is_masked, torch.full_like(x1, self.mask_token_id), x1)
        masked_row = is_masked.nonzero(as_tuple=True)[0]
        non_prompt_lengths = trainable.sum(dim=1)
        return {
            "xt": xt,
            "xt_attention_mask": attention_mask,
            "t": t,
            "logits_positions": is_masked,
            "masked_targets": x1[is_masked],
            "masked_row": masked_row,
            "masked_weights": 1.0 / t[masked_row],
            "non_prompt_lengths": non_prompt_lengths,
            "num_loss_tokens": non_prompt_lengths.sum(),
        }
