"""What one micro-batch costs: the FlexMDM loss, or LLaDA's masked-diffusion loss for the baseline.

An objective runs the model on a collated batch (:mod:`flexretrofit.data.collator`) and returns the loss
divided by the ``normalizer`` the trainer passes: the number of loss tokens of the *whole* optimizer step
(all accumulation steps, all ranks), so that summing the micro-batch losses gives the step's loss once
normalised. Both objectives ask for token logits only at MASK positions (``[N, V]``), never ``[B, L, V]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from flexretrofit.diffusion import Schedule, build_schedule, flexmdm_loss, mdm_loss


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

    def __init__(
        self,
        insertion_schedule: Schedule | dict | str,
        unmask_schedule: Schedule | dict | str,
        insertion_weighting: str = "elbo",
    ):
        self.insertion_schedule = build_schedule(insertion_schedule)
        self.unmask_schedule = build_schedule(unmask_schedule)
        self.insertion_weighting = insertion_weighting

    @classmethod
    def for_model(cls, model_config: Any, insertion_weighting: str = "elbo") -> FlexMDMObjective:
        """The objective of a FlexMDM, with the schedules of its config."""
        return cls(model_config.insertion_schedule, model_config.unmask_schedule, insertion_weighting)

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
            insertion_weighting=self.insertion_weighting,
        )
        parts = {"unmask_loss": losses.unmask_loss.detach(), "insertion_loss": losses.insertion_loss.detach()}
        return LossParts(loss=losses.loss, parts=parts)


class MDMObjective:
    """LLaDA's loss: ``sum over MASK of CE / t``, divided by the normaliser (non-prompt tokens of the step).

    Takes a :class:`~flexretrofit.models.LLaDAModelLM` (possibly inside PEFT) and a batch from
    :class:`~flexretrofit.data.MDMCollator`.
    """

    part_names = ("unmask_loss",)

    @classmethod
    def for_model(cls, model_config: Any, insertion_weighting: str = "elbo") -> MDMObjective:
        """The objective of a LLaDA MDM (it has no insertion loss to weight, nor schedules to read)."""
        return cls()

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], normalizer: Tensor | float) -> LossParts:
        logits = model(
            input_ids=batch["xt"],
            attention_mask=batch["xt_attention_mask"],
            logits_positions=batch["logits_positions"],
        ).logits
        loss = mdm_loss(logits, batch["masked_targets"], batch["masked_weights"], normalizer)
        return LossParts(loss=loss, parts={"unmask_loss": loss.detach()})
