"""The training loop: an explicit Accelerate loop (torchtune style) for FlexMDM and the LLaDA MDM baseline.

Why an explicit loop and not the Hugging Face ``Trainer``: the things that decide whether a diffusion
retrofit is right are easier to get right, and to read, when they are written out:

- **loss normalisation**: a step's loss is the sum of its weighted terms divided *once* by the number of
  loss tokens of the whole step, counted over every accumulation step and every rank (all-reduced before
  the first forward), not a mean of per-micro-batch means;
- **stratified times across the global batch**: every micro-batch of a step is a slot of one global batch
  (slot ``rank * accumulation + m``), so the times of a step form one low-discrepancy grid and the noise of
  a sample depends on its place in the global batch only, not on how that batch is split over processes;
- **exact resume**: the data position (the length-grouped sampler's ``(epoch, position)``), the scheduler,
  the RNG and the step are saved with the weights and optimizer, and the noise and dropout of each
  micro-batch are seeded from (seed, step, slot), so a resumed run continues with the same losses as an
  uninterrupted one, and a 2-process run computes what a 1-process run with 2 accumulation steps does.
  A streamed dataset (``data.streaming``) is read by each rank from its own share of the stream, and every
  rank's position in it is saved; it resumes exactly with the same number of processes.

One step, in order: take the next global batch of sample indices; keep this rank's slice; split it into
``accumulation`` micro-batches; noise each with its slot's collator; all-reduce the loss-token count; for
each micro-batch run the objective and backward; clip, step the optimizer and the learning-rate schedule.
With ``data.balance: tokens`` every rank takes and noises the whole global batch (each slot exactly as above),
then keeps its share of the rows regrouped into micro-batches of about equal cost
(:mod:`flexretrofit.data.balancing`): same loss terms and normaliser, so the same gradient, without every
process waiting for the micro-batch that drew the largest times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.data import LengthGroupedBatchSampler, LengthGroupedStream
from flexretrofit.data.balancing import MicroBatchCost, balance_micro_batches
from flexretrofit.run_lock import OutputDirBusy, lock_output_dir
from flexretrofit.training.builders import base_model, build_optimizer, build_scheduler
from flexretrofit.training.checkpointing import (
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from flexretrofit.training.config import RecipeConfig
from flexretrofit.training.export import export_run
from flexretrofit.training.methods import training_method
from flexretrofit.training.metrics import MetricsLogger
from flexretrofit.training.progress import ProgressBar, flat_config
from flexretrofit.training.resume import check_batch_layout, load_sampler_state, sampler_state, trainer_state
from flexretrofit.training.validation import batch_layout, check_output_dir, micro_batch_token_cap
from flexretrofit.utils import derive_seed

Callback = Callable[["Trainer", dict[str, Any]], None]


class Trainer:
    """Train a FlexMDM (or the LLaDA MDM baseline) with Accelerate: single process, DDP or DeepSpeed ZeRO-3.

    Args:
        config: the recipe config (its ``optim``, ``train``, ``eval``, ``export`` sections are used here).
        accelerator: from :func:`~flexretrofit.training.builders.build_accelerator`.
        model: from :func:`~flexretrofit.training.builders.build_model` (not yet prepared).
        train_dataset / eval_dataset: samples with ``input_ids``, ``prompt_mask`` and ``length``; a
            ``datasets.IterableDataset`` for training is streamed (:class:`LengthGroupedStream`, each rank
            reading its own share, ``data.shuffle_buffer`` samples at a time).
        tokenizer: saved with the export.
        callbacks: called as ``callback(trainer, metrics)`` after every optimizer step.
    """

    def __init__(
        self,
        config: RecipeConfig,
        accelerator: Accelerator,
        model: nn.Module,
        train_dataset,
        eval_dataset=None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.config = config
        self.accelerator = accelerator
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.train_dataset = train_dataset
        self.world_size = accelerator.num_processes
        self.rank = accelerator.process_index
        self.micro_batch_size, self.accumulation = batch_layout(config.train, self.world_size)
        self.output_dir = Path(config.train.output_dir)
        if accelerator.is_main_process:  # before anything is written there (the recipes check it earlier too)
            check_output_dir(config.train)
        self._lock_output_dir()
        self.step = 0
        self.logger = MetricsLogger(self.output_dir / "log.jsonl", enabled=accelerator.is_main_process)

        model_config = base_model(model).config
        # The method of the model trained: a LLaDA trains as the MDM baseline, a FlexMDM as a FlexMDM.
        self.method = training_method(model_config)
        self.objective = self.method.objective_class.for_model(
            model_config, insertion_weighting=config.train.insertion_loss_weighting
        )
        num_slots = self.world_size * self.accumulation
        # Balanced: every rank noises the whole global batch (the noise of each slot is seeded as before)
        # and keeps its share of the regrouped rows; otherwise a rank noises only its own slots.
        self.balance = config.data.balance == "tokens"
        slots = range(num_slots) if self.balance else self._slots()
        self.collators = [self._collator(model_config, slot, num_slots, config.train.seed) for slot in slots]
        self.pad_token_id = model_config.pad_token_id
        self.micro_batch_cost = MicroBatchCost.for_model(model_config)
        self.token_cap = micro_batch_token_cap(config)

        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        optimizer = build_optimizer(model, config.optim)
        # The schedule is stepped here once per optimizer step and saved as JSON; Accelerate never sees it.
        self.scheduler = build_scheduler(optimizer, config.optim, config.train.max_steps)
        accelerator.gradient_accumulation_steps = self.accumulation
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            self._configure_deepspeed()
        elif config.train.mixed_precision != "no":
            # Autocast computes in bf16; the trained weights and AdamW state stay in fp32.
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        if accelerator.gradient_accumulation_steps != self.accumulation:
            raise RuntimeError(
                f"Accelerate uses {accelerator.gradient_accumulation_steps} accumulation steps, the config needs "
                f"{self.accumulation}; remove gradient_accumulation_steps from the accelerate / DeepSpeed config."
            )

        mega_batch_factor = config.data.mega_batch_factor if config.data.length_grouping else 1
        self.streaming = isinstance(train_dataset, datasets.IterableDataset)
        if self.streaming:  # yields this rank's samples, read from its own share of the stream
            self.sampler = LengthGroupedStream(
                train_dataset,
                self.micro_batch_size * self.accumulation,
                shuffle_buffer=config.data.shuffle_buffer,
                mega_batch_factor=mega_batch_factor,
                seed=config.train.seed,
                rank=self.rank,
                world_size=self.world_size,
            )
        else:  # yields this rank's slice of each global batch of sample indices
            self.sampler = LengthGroupedBatchSampler(
                train_dataset["length"],
                config.train.global_batch_size,
                mega_batch_factor=mega_batch_factor,
                seed=config.train.seed,
                rank=0 if self.balance else self.rank,  # balanced: every rank takes the whole global batch
                world_size=1 if self.balance else self.world_size,
            )
        self.eval_batches = self._fixed_eval_batches(eval_dataset, model_config)

    # -- setup -------------------------------------------------------------------------------

    def _lock_output_dir(self) -> None:
        """One run per ``output_dir``: the main process locks it for the life of the process (every rank of
        this run shares the folder, so one lock covers them); every rank learns the outcome and stops alike."""
        problem = None
        if self.accelerator.is_main_process:
            try:
                lock_output_dir(self.output_dir, what="train.output_dir")
            except OutputDirBusy as error:
                problem = str(error)
        if self.world_size > 1:
            problem = broadcast_object_list([problem])[0]
        if problem is not None:
            raise OutputDirBusy(problem)

    def _slots(self) -> range:
        """This rank's slots of the global batch: rank r owns slots r * accumulation + m."""
        return range(self.rank * self.accumulation, (self.rank + 1) * self.accumulation)

    def _collator(self, model_config, slot: int, num_slots: int, seed: int):
        return self.method.collator_class.for_model(model_config, rank=slot, world_size=num_slots, seed=seed)

    def _configure_deepspeed(self) -> None:
        """Batch layout and clipping from the recipe config, so the two configs cannot disagree."""
        plugin = self.accelerator.state.deepspeed_plugin
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = self.micro_batch_size
        ds["gradient_accumulation_steps"] = self.accumulation
        ds["train_batch_size"] = self.config.train.global_batch_size
        ds["gradient_clipping"] = self.config.optim.max_grad_norm
        plugin.gradient_accumulation_steps = self.accumulation

    def _fixed_eval_batches(self, eval_dataset, model_config) -> list[dict[str, torch.Tensor]]:
        """The evaluation subset, noised once with fixed seeds: every evaluation sees the same x_t and t."""
        if eval_dataset is None or len(eval_dataset) == 0:
            return []
        size, seed = self.config.eval.batch_size, self.config.eval.seed
        collator = self._collator(model_config, 0, 1, seed)
        samples = _rows(eval_dataset, range(len(eval_dataset)))
        return [collator.noise(collator.pad(samples[i : i + size]), i) for i in range(0, len(samples), size)]

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run (or resume) training up to ``train.max_steps`` (or ``train.stop_at_step``); returns the last
        step's metrics. Checkpoints every ``train.save_every`` steps and at the end."""
        config = self.config.train
        resume = resolve_resume(config.resume_from, self.output_dir)
        if resume is not None:
            self._load(resume)
        self.logger.log(
            "start",
            step=self.step,
            distributed_type=self.accelerator.distributed_type.value,
            num_processes=self.world_size,
            micro_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.accumulation,
            global_batch_size=config.global_batch_size,
            trainable_parameters=self.trainable_parameters,
            train_samples=None if self.streaming else len(self.train_dataset),
            mixed_precision=config.mixed_precision,
        )
        stop = config.stop_at_step or config.max_steps
        first_step = self.step
        if config.report_to != "none":
            self.accelerator.init_trackers(self.output_dir.name, config=flat_config(self.config.to_dict()))
        progress = ProgressBar(stop, initial=self.step, enabled=self.accelerator.is_main_process)
        batches = iter(self.sampler)
        metrics: dict[str, Any] = {}
        while self.step < stop:
            started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:  # end of an epoch (a pass over the stream); the sampler moves on to the next
                batches = iter(self.sampler)
                continue
            samples = batch if self.streaming else _rows(self.train_dataset, batch)
            if self.balance:
                micro_batches, num_tokens = self._noise_balanced(samples)
            else:
                micro_batches, num_tokens = self._noise(samples), sum(len(s["input_ids"]) for s in samples)
            metrics = self.train_step(micro_batches, num_tokens=num_tokens)
            self.step += 1
            metrics.update(step=self.step, step_time=time.perf_counter() - started)
            metrics["tokens_per_s"] = metrics["tokens"] / metrics["step_time"]
            progress.update(metrics)
            if self.step % config.log_every == 0 or self.step == stop:
                self.logger.log("train", **metrics)
                self._track(metrics)
            if self.config.eval.every and self.step % self.config.eval.every == 0:
                self.evaluate()
            if config.save_every and self.step % config.save_every == 0 and self.step < stop:
                self.save()
            for callback in self.callbacks:
                callback(self, metrics)
        if self.step > first_step:  # a resumed run that was already complete saves nothing new
            if self.eval_batches and not (self.config.eval.every and self.step % self.config.eval.every == 0):
                self.evaluate()
            self.save()
        progress.close()
        self.logger.log("end", step=self.step)
        return metrics

    def _track(self, metrics: dict[str, Any], prefix: str = "train/") -> None:
        """Send the numbers of ``metrics`` to the trackers of ``train.report_to`` (main process only)."""
        if self.config.train.report_to == "none":
            return
        numbers = {
            prefix + k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.accelerator.log(numbers, step=self.step)

    def _noise(self, samples: list[dict]) -> list[dict[str, torch.Tensor]]:
        """Samples -> one noised micro-batch per collator's slot (this rank's slots, or all when balancing)."""
        size = self.micro_batch_size
        return [
            collator.noise(collator.pad(samples[m * size : (m + 1) * size]), self.step)
            for m, collator in enumerate(self.collators)
        ]

    def _noise_balanced(self, samples: list[dict]) -> tuple[list[dict[str, torch.Tensor]], int]:
        """The whole global batch, noised slot by slot as the fixed layout does, regrouped into micro-batches of
        about equal cost; returns this rank's ``accumulation`` micro-batches and its rows' clean token count.

        ``samples`` is the global batch (map datasets: the sampler yields all of it to every rank) or this
        rank's share of a stream (gathered here, rank order, so slot ``s`` holds the same samples as before).
        """
        if self.streaming and self.world_size > 1:
            samples = gather_object(samples)
        micro_batches, rows = balance_micro_batches(
            self._noise(samples),
            self.world_size,
            self.rank,
            self.micro_batch_cost,
            self.token_cap,
            self.pad_token_id,
        )
        return micro_batches, sum(len(samples[i]["input_ids"]) for i in rows)

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]], num_tokens: int = 0) -> dict[str, Any]:
        """One optimizer step over this rank's micro-batches.

        The loss is normalised once by the global loss-token count (all ranks, all micro-batches). Accelerate
        / DeepSpeed divide each backward by the accumulation steps and average gradients over ranks; the
        loss is multiplied by ``world_size * accumulation`` to undo both, so the gradient is exactly that
        of (sum of the step's terms) / (global count).
        """
        accelerator, model = self.accelerator, self.model
        if len(micro_batches) != self.accumulation:
            raise ValueError(f"expected {self.accumulation} micro-batches, got {len(micro_batches)}")
        model.train()
        device = accelerator.device
        local = torch.tensor(
            [sum(int(b["num_loss_tokens"]) for b in micro_batches), num_tokens],
            dtype=torch.float64,
            device=device,
        )
        loss_tokens, tokens = accelerator.reduce(local, reduction="sum").tolist()
        normalizer = torch.tensor(loss_tokens, dtype=torch.float32, device=device)
        scale = self.world_size * self.accumulation
        totals = torch.zeros(1 + len(self.objective.part_names), dtype=torch.float64, device=device)
        grad_norm = None
        for m, batch in enumerate(micro_batches):
            batch = {k: v.to(device) for k, v in batch.items()}
            # Dropout draws from a generator seeded by (seed, step, slot), like the collators' noise: the
            # same sample gets the same mask whatever the process layout, and a resumed run continues it.
            torch.manual_seed(derive_seed("dropout", self.config.train.seed, self.step, self._slots()[m]))
            with accelerator.accumulate(model):
                if accelerator.sync_gradients != (m == len(micro_batches) - 1):
                    raise RuntimeError(
                        "Accelerate's accumulation counter is out of step with the micro-batches."
                    )
                out = self.objective(model, batch, normalizer)
                # Checked on every rank before backward (DeepSpeed steps inside it): no update from a
                # non-finite loss ever reaches the weights.
                self._stop_if_not_finite(out.loss.detach(), "loss")
                accelerator.backward(out.loss * scale)
                parts = [out.loss.detach()] + [out.parts[name] for name in self.objective.part_names]
                totals += torch.stack(parts).double()
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(
                        model.parameters(), self.config.optim.max_grad_norm
                    )
                    if grad_norm is not None:
                        self._stop_if_not_finite(torch.as_tensor(grad_norm, device=device), "gradient norm")
                self.optimizer.step()
                self.optimizer.zero_grad()
        # The learning rates this step used, before the schedule moves on.
        lrs = {
            f"lr_{group.get('name', i)}": lr
            for i, (group, lr) in enumerate(
                zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr())
            )
        }
        self.scheduler.step()
        totals = accelerator.reduce(totals, reduction="sum").tolist()
        metrics = {"loss": totals[0], **dict(zip(self.objective.part_names, totals[1:])), **lrs}
        metrics.update(
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            loss_tokens=int(loss_tokens),
            tokens=int(tokens),
        )
        return metrics

    def _stop_if_not_finite(self, value: torch.Tensor, what: str) -> None:
        """Raise :class:`TrainingDiverged` on every rank when ``value`` is NaN or infinite on any rank."""
        bad = (~torch.isfinite(value.float())).double().reshape(1)
        if float(self.accelerator.reduce(bad, reduction="sum")) == 0:
            return
        self.optimizer.zero_grad()
        checkpoints = sorted((self.output_dir / "checkpoints").glob("step_*"))
        last = (
            f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved yet"
        )
        raise TrainingDiverged(
            f"training stopped at step {self.step + 1}: the {what} is not finite (NaN or inf); the weights were "
            f"not updated and nothing was exported; {last}. Lower optim.lr or optim.max_grad_norm (or use "
            "mixed_precision=no), then resume with train.resume_from=latest."
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss on the fixed evaluation subset: the sums of all batches divided by their total token count.

        Batches are shared out over the ranks; under ZeRO-3 every rank must run the same number of forward
        passes, so a rank with nothing left repeats its first batch with weight 0.
        """
        if not self.eval_batches:
            return {}
        self.model.eval()
        device = self.accelerator.device
        mine = self.eval_batches[self.rank :: self.world_size]
        rounds = -(-len(self.eval_batches) // self.world_size)
        totals = torch.zeros(2 + len(self.objective.part_names), dtype=torch.float64, device=device)
        for i in range(rounds):
            weight = 1.0 if i < len(mine) else 0.0
            batch = {
                k: v.to(device) for k, v in (mine[i] if mine and weight else self.eval_batches[0]).items()
            }
            out = self.objective(self.model, batch, 1.0)  # normaliser 1: sums
            parts = [out.loss.detach()] + [out.parts[name] for name in self.objective.part_names]
            totals[:-1] += weight * torch.stack(parts).double()
            totals[-1] += weight * int(batch["num_loss_tokens"])
        totals = self.accelerator.reduce(totals, reduction="sum").tolist()
        count = max(totals[-1], 1.0)
        results = {"eval_loss": totals[0] / count}
        results.update(
            {f"eval_{name}": value / count for name, value in zip(self.objective.part_names, totals[1:-1])}
        )
        self.logger.log("eval", step=self.step, **results, eval_tokens=int(totals[-1]))
        self._track(results, prefix="")
        self.model.train()
        return results

    # -- checkpoints and export --------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        """Everything besides weights, optimizer and RNG that exact resume needs (collective when streaming)."""
        layout = (self.world_size, self.micro_batch_size, self.accumulation)
        sampler = sampler_state(self.sampler, self.streaming)
        return trainer_state(self.step, self.scheduler, sampler, *layout, self.config.to_dict())

    def save(self) -> Path:
        """Checkpoint the current step (collective)."""
        path = save_checkpoint(
            self.accelerator,
            self.output_dir,
            self.step,
            self.trainer_state(),
            keep=self.config.train.keep_checkpoints,
        )
        self.logger.log("checkpoint", step=self.step, path=str(path))
        return path

    def _load(self, path: Path) -> None:
        state = load_checkpoint(self.accelerator, path, self.config.train.max_steps)
        check_batch_layout(state, path, self.config.train.global_batch_size)
        if (state["world_size"], state["gradient_accumulation_steps"]) != (
            self.world_size,
            self.accumulation,
        ):
            self.logger.log(
                "warning", step=state["step"], message="resuming with another process/accumulation split"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        # The optimizer state restored the learning rates already; setting them keeps every backend in sync.
        for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr
        load_sampler_state(
            self.sampler,
            state["sampler"],
            path,
            streaming=self.streaming,
            world_size=self.world_size,
            rank=self.rank,
        )
        self.step = int(state["step"])
        self.logger.log("resume", step=self.step, path=str(path))

    def export(self, export_dir: str | Path | None = None) -> Path:
        """Write the final model folder (``export.dir``, default ``<output_dir>/final``); collective."""
        export = self.config.export
        target = Path(export_dir or export.dir or self.output_dir / "final")
        unwrapped = self.accelerator.unwrap_model(self.model)
        # Under ZeRO-3 a rank holds only its shard (others are empty): each rank checks what it has.
        broken = sorted(n for n, p in unwrapped.named_parameters() if not bool(torch.isfinite(p).all()))
        self._stop_if_not_finite(torch.tensor(float("nan") if broken else 0.0), f"weight {broken[:1]}")
        path = export_run(self.accelerator, self.model, self.tokenizer, self.config, self.step, target)
        self.logger.log("export", step=self.step, path=str(path), lora=export.lora)
        return path


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped before the update."""


def _rows(dataset, indices) -> list[dict[str, list]]:
    """Samples ``{"input_ids", "prompt_mask"}`` at ``indices`` (one columnar read, then rows)."""
    indices = list(indices)
    columns = dataset.select_columns(["input_ids", "prompt_mask"])[indices]
    return [
        {"input_ids": ids, "prompt_mask": mask}
        for ids, mask in zip(columns["input_ids"], columns["prompt_mask"])
    ]
