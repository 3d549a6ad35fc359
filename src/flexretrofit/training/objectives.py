"""What one micro-batch costs: the FlexMDM loss, or LLaDA's masked-diffusion loss for the baseline.

An objective runs the model on a collated batch (:mod:`flexretrofit.data.collator`) and returns the loss
divided by the ``normalizer`` the trainer passes: the number of loss tokens of the *whole* optimizer step
(all accumulation steps, all ranks), so that summing the micro-batch losses gives the step's loss once
normalised. Both objectives ask for token logits only at MASK positions (``[N, V]``), never ``[B, L, V]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexretrofit.diffusion import Schedule, build_schedule, flexmdm_loss


@dataclass
class LossParts:
    """``loss`` (a scalar with gradient) and its parts (scalars, detached), all already normalised."""

    loss: Tensor
    parts: dict[str, Tensor]


class FlexMDMObjective:
    """Unmasking cross entropy at MASK tokens plus the insertion (Poisson-Bregman) loss per slot.

    Reads the schedules from the model config, like the collator and the sampler.
    """

    part_names = ("unmask_loss", "insertion_loss")

    def __init__(self, insertion_schedule: Schedule | dict | str, unmask_schedule: Schedule | dict | str):
        self.insertion_schedule = build_schedule(insertion_schedule)
        self.unmask_schedule = build_schedule(unmask_schedule)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], normalizer: Tensor | float) -> LossParts:
        """``batch`` from :class:`~flexretrofit.data.FlexMDMCollator`; ``normalizer`` a scalar count."""
        out = model(
            batch["xt"],
            batch["t"],
            attention_mask=batch["xt_attention_mask"],
            logits_positions=batch["logits_positions"],
        )
        losses = flexmdm_loss(
            out.logits,
            batch["masked_targets"],
            batch["masked_row"],
            out.expected_gaps,
            batch["slot_gaps"],
            batch["slot_valid"],
            batch["t"],
            self.insertion_schedule,
            self.unmask_schedule,
            normalizer=normalizer,
        )
        parts = {"unmask_loss": losses.unmask_loss.detach(), "insertion_loss": losses.insertion_loss.detach()}
        return LossParts(loss=losses.loss, parts=parts)


class GatheredLogitsLLaDA(nn.Module):
    """A LLaDA backbone that projects to the vocabulary only at requested positions (the MDM baseline's
    counterpart of FlexMDM's ``logits_positions``), so both models train through one forward call.

    ``forward(input_ids [B, L], attention_mask [B, L], logits_positions [B, L])`` -> logits ``[N, V]``.
    """

    def __init__(self, llada: nn.Module):
        super().__init__()
        self.llada = llada

    def forward(self, input_ids: Tensor, attention_mask: Tensor, logits_positions: Tensor) -> Tensor:
        hidden = self.llada(input_ids, attention_mask=attention_mask, compute_logits=False).last_hidden_state
        return self.llada.get_output_embeddings()(hidden[logits_positions.bool()])


class MDMObjective:
    """LLaDA's loss: ``sum over MASK of CE / t``, divided by the normaliser (non-prompt tokens of the step).

    Takes a :class:`GatheredLogitsLLaDA` and a batch from :class:`~flexretrofit.data.MDMCollator`.
    """

    part_names = ("unmask_loss",)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], normalizer: Tensor | float) -> LossParts:
        logits = model(batch["xt"], batch["xt_attention_mask"], batch["logits_positions"])
        cross_entropy = F.cross_entropy(logits.float(), batch["masked_targets"], reduction="none")  # [N]
        normalizer = torch.as_tensor(normalizer, device=logits.device, dtype=torch.float32).clamp_min(1.0)
        loss = (batch["masked_weights"].to(cross_entropy) * cross_entropy).sum() / normalizer
        return LossParts(loss=loss, parts={"unmask_loss": loss.detach()})
