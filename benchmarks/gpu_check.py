"""One prepared check of the real 8B path on one GPU: forward, a retrofit training step, sampling, overhead.

Builds LLaDA-8B (the published shape, random bf16 weights, or a local checkpoint folder with ``--weights``)
and its fresh FlexMDM retrofit with the settings of ``recipes/configs/retrofit_llada_8b.yaml``, then:

(a) ``forward``: FlexMDM forward (no grad, logits at the MASK positions) at 1 x 1024, 8 x 1024 and a padded
    8 x 1024 batch: ms, peak memory and the attention kernels that ran (the profiler's SDPA op names);
(b) ``train_step``: ``Trainer.train_step`` of the training package on one noised 8 x 1024 micro-batch with
    the published LoRA targets, activation checkpointing and bf16: step time, peak memory, tokens/s, MFU
    (FLOPs from ``common.retrofit_step_flops``; the formula is written into the JSON);
(c) ``generation``: ``generate_flex`` on 4 prompts of 200 tokens, 256 steps, cap 1024, ~250 generated tokens,
    against the same sampler on a fixed 1024 canvas with a full-vocabulary softmax (the published cost);
(d) ``forward_backward``: FlexMDM / LLaDA forward + backward at 8 x 1024 on the training model of (b).

Each section has a time budget and is skipped, with the reason, when it would not fit (or runs out of
memory); the JSON has the same keys either way. About 5 minutes on one H100 / H200, no downloads.

    make gpu-check                                   # writes gpu_check.json and prints the table
    python benchmarks/gpu_check.py --weights PATH    # a local LLaDA-8B folder instead of random weights
    python benchmarks/gpu_check.py --tiny --out FILE # the same sections on CPU, tiny shapes (seconds)
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import (
    FLOP_FORMULA,
    attention_kernels,
    interleaved_times,
    peak_bf16_flops,
    peak_gb,
    reset_peak,
    retrofit_step_flops,
    sdpa_backends,
    synchronize,
    timed,
)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "configs" / "retrofit_llada_8b.yaml"

# Shapes of each mode: the published ones, and tiny ones that run on one CPU thread in seconds.
SHAPES = {
    "8b": dict(length=1024, batch=8, prompts=4, prompt_length=200, generated=250, steps=256, budget_s=450),
    "tiny": dict(length=64, batch=8, prompts=4, prompt_length=20, generated=25, steps=16, budget_s=120),
}
SECTION_BUDGET_S = {"forward": 45, "generation": 150, "train_step": 120, "forward_backward": 60}


class Clock:
    """The run's deadline: a section's clock starts at its first ``left`` call; it gets the smaller of its
    own budget (``SECTION_BUDGET_S``) and what is left of the run's."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s
        self.section_start: dict[str, float] = {}

    def left(self, section: str) -> float:
        now = time.perf_counter()
        started = self.section_start.setdefault(section, now)
        return min(SECTION_BUDGET_S[section] - (now - started), self.budget_s - (now - self.start))


def section(**metrics) -> dict:
    """A section's record: its metrics (None until measured), ``status`` and ``reason``."""
    return {"status": "skipped", "reason": None, **metrics}


# -- model ----------------------------------------------------------------------------------------


def build_models(args, device: torch.device, dtype: torch.dtype, recipe):
    """The LLaDA backbone (8B or tiny; random or ``--weights``) and its fresh FlexMDM retrofit, on ``device``."""
    from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAConfig, LLaDAModelLM
    from flexretrofit.testing import tiny_llada_config

    flex_config = dict(recipe.model.flex_config)
    if args.weights:
        backbone = LLaDAModelLM.from_pretrained(args.weights, dtype=dtype, device_map={"": device})
        weights = str(args.weights)
    else:
        # LLaDAConfig() is the published 8B; --layers keeps its shape with fewer blocks.
        config = (
            tiny_llada_config()
            if args.tiny
            else LLaDAConfig(**({"n_layers": args.layers} if args.layers else {}))
        )
        torch.manual_seed(0)
        with torch.device(device):
            backbone = LLaDAModelLM._from_config(config, dtype=dtype)
        weights = "random (seed 0)"
    with torch.device(device):
        model = FlexMDMForMaskedDiffusion.from_llada(backbone, flex_config=flex_config, dtype=dtype)
    return model.eval(), weights


def token_ids(config, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random ordinary token ids (below every special id of the config)."""
    special = [i for i in (config.mask_token_id, config.pad_token_id, config.eos_token_id) if i is not None]
    high = min([config.vocab_size, *special])
    return torch.randint(min(10, high - 1), high, shape, generator=generator)


# -- sections ---------------------------------------------------------------------------------------


def forward_section(model, device, shapes, clock) -> dict:
    """(a) FlexMDM inference forward at 1 x L, B x L and a padded B x L batch."""
    gen = torch.Generator().manual_seed(1)
    cfg, length, batch = model.config, shapes["length"], shapes["batch"]
    results = {}
    for name, rows in (("single", 1), ("batch", batch), ("batch_padded", batch)):
        entry = section(batch=rows, length=length, padded=name == "batch_padded", ms=None, tokens_per_s=None)
        entry.update(peak_memory_gb=None, attention_kernels=None)
        results[name] = entry
        if clock.left("forward") <= 0:
            entry["reason"] = "time budget used up"
            continue
        ids = token_ids(cfg.backbone_config, (rows, length), gen)
        mask = torch.ones(rows, length, dtype=torch.bool)
        if entry["padded"]:
            mask = torch.arange(length)[None] < torch.linspace(length, length // 2, rows).long()[:, None]
        ids, mask = ids.to(device), mask.to(device)
        masked = (torch.rand(rows, length, generator=gen) < 0.5).to(device) & mask
        ids = torch.where(masked, cfg.mask_token_id, ids)
        t = torch.full((rows,), 0.5, device=device)

        def run(ids=ids, t=t, mask=mask, masked=masked):
            with torch.no_grad():
                model(ids, t, mask, logits_positions=masked)

        try:
            reset_peak(device)
            times = timed(run, device, repeats=3)
            entry.update(
                status="ok",
                ms=statistics.median(times) * 1e3,
                tokens_per_s=rows * length / statistics.median(times),
                peak_memory_gb=peak_gb(device),
                attention_kernels=attention_kernels(run),
            )
        except torch.OutOfMemoryError as error:
            entry["reason"] = f"out of memory: {str(error).splitlines()[0]}"
    return results


class TargetLengthGaps(torch.nn.Module):
    """A FlexMDM whose end slot predicts the tokens still missing to ``target_length`` (every other slot: 0).

    Random weights predict no meaningful gaps (the fresh head's constant gap makes lengths a branching
    process); this stands in for a trained insertion head so every row grows to a known length. The model's
    own head still runs, so the cost of a step is unchanged.
    """

    def __init__(self, model: torch.nn.Module, target_length: int):
        super().__init__()
        self.model, self.target_length = model, target_length
        self.config = model.config
        self.insertion_schedule, self.unmask_schedule = model.insertion_schedule, model.unmask_schedule

    def forward(self, input_ids, t, attention_mask=None, logits_positions=None):
        out = self.model(input_ids, t, attention_mask, logits_positions=logits_positions)
        lengths = (
            attention_mask.sum(1) if attention_mask is not None else torch.full_like(t, input_ids.shape[1])
        )
        missing = (self.target_length - lengths).clamp(min=0).to(out.expected_gaps.dtype)
        out.expected_gaps = torch.zeros_like(out.expected_gaps).scatter(
            1, lengths.long()[:, None], missing[:, None]
        )
        return out


def generation_section(model, device, shapes, clock, forward_ms: float | None) -> dict:
    """(c) generate_flex as shipped against a fixed canvas with a full-vocabulary softmax (same sampler)."""
    from flexretrofit.sampling import FlexGenerationConfig, generate_flex

    prompts, prompt_length, steps = shapes["prompts"], shapes["prompt_length"], shapes["steps"]
    cap = shapes["length"]
    entry = section(prompts=prompts, prompt_length=prompt_length, steps=steps, max_length=cap)
    entry.update(generated_tokens=None, flex_s=None, flex_tokens_per_s=None, fixed_canvas_s=None)
    entry.update(fixed_canvas_tokens_per_s=None, ratio=None, same_output=None, peak_memory_gb=None)
    if clock.left("generation") <= 0:
        entry["reason"] = "time budget used up"
        return entry
    if forward_ms is not None:
        # The fixed canvas runs `steps` forwards of prompts x cap; the flex run costs less than that again.
        projected = 2 * steps * forward_ms / 1e3 * prompts / shapes["batch"]
        if projected > clock.left("generation"):
            entry["reason"] = (
                f"projected {projected:.0f} s > the {clock.left('generation'):.0f} s left for it"
            )
            return entry
    gen = torch.Generator().manual_seed(2)
    rows = token_ids(model.config.backbone_config, (prompts, prompt_length), gen).tolist()
    wrapped = TargetLengthGaps(model, prompt_length + shapes["generated"])
    settings = dict(steps=steps, max_length=cap, confidence="top_prob", seed=0, count_distribution="binomial")
    outputs, seconds = {}, {}
    try:
        reset_peak(device)
        generate_flex(wrapped, rows, generation_config=FlexGenerationConfig(**{**settings, "steps": 4}))
        for name, extra in (("flex", {}), ("fixed", dict(fixed_canvas=True, full_softmax=True))):
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                outputs[name] = generate_flex(
                    wrapped, rows, generation_config=FlexGenerationConfig(**settings, **extra)
                )
            synchronize(device)
            seconds[name] = time.perf_counter() - start
    except torch.OutOfMemoryError as error:
        entry["reason"] = f"out of memory: {str(error).splitlines()[0]}"
        return entry
    flex = outputs["flex"]
    generated = int((flex.lengths - flex.prompt_lengths).sum())
    entry.update(
        status="ok",
        generated_tokens=generated,
        flex_s=seconds["flex"],
        flex_tokens_per_s=generated / seconds["flex"],
        fixed_canvas_s=seconds["fixed"],
        fixed_canvas_tokens_per_s=generated / seconds["fixed"],
        ratio=seconds["fixed"] / seconds["flex"],
        same_output=bool(torch.equal(flex.sequences, outputs["fixed"].sequences)),
        peak_memory_gb=peak_gb(device),
    )
    return entry


def training_setup(model, recipe_overrides: list[str], shapes: dict):
    """The recipe config of the 8B retrofit (one micro-batch per step), LoRA + checkpointing, and a Trainer."""
    import datasets

    from flexretrofit.models.lora import apply_lora
    from flexretrofit.training import Trainer, build_accelerator, load_config

    output_dir = tempfile.mkdtemp(prefix="gpu_check_")
    batch = shapes["batch"]
    overrides = [
        f"train.output_dir={output_dir}",
        f"train.global_batch_size={batch}",
        f"train.micro_batch_size={batch}",
        "train.max_steps=10",
        "train.save_every=null",
        "train.resume_from=null",
        "eval.every=null",
        "eval.num_samples=0",
        *recipe_overrides,
    ]
    config = load_config(RECIPE, overrides)
    # What training.build_model does after loading, applied to the in-memory retrofit.
    model.config.use_cache = False
    if config.model.activation_checkpointing:
        model.activation_checkpointing_enable()
    lora = config.lora
    net = apply_lora(model, lora.targets, r=lora.r, alpha=lora.alpha, dropout=lora.dropout)
    gen = torch.Generator().manual_seed(3)
    ids = token_ids(model.config.backbone_config, (batch, shapes["length"]), gen).tolist()
    data = datasets.Dataset.from_dict(
        {"input_ids": ids, "prompt_mask": [[False] * len(r) for r in ids], "length": [len(r) for r in ids]}
    )
    trainer = Trainer(config, build_accelerator(config), net, data)
    return trainer, data, config


def lora_token_params(net) -> tuple[int, int]:
    """Trainable weights applied at every position, and at MASK positions only (the LM head's adapter)."""
    per_token = per_masked = 0
    for name, param in net.named_parameters():
        if not param.requires_grad or param.ndim < 2:
            continue
        if "lora_" in name:
            if "transformer.ff_out" in name:
                per_masked += param.numel()
            else:
                per_token += param.numel()
        elif "insertion_head" in name:
            per_token += param.numel()
    return per_token, per_masked


def train_section(trainer, data, config, device, clock, peak_flops: float | None) -> dict:
    """(b) Trainer.train_step on one noised micro-batch: step time, memory, tokens/s, MFU."""
    from flexretrofit.training.builders import base_model

    backbone_config = base_model(trainer.model).config.backbone_config
    per_token, per_masked = lora_token_params(trainer.model)
    entry = section(micro_batch=len(data), x1_length=max(data["length"]))
    entry.update(
        lora_targets=config.lora.targets,
        lora_r=config.lora.r,
        activation_checkpointing=config.model.activation_checkpointing,
        mixed_precision=config.train.mixed_precision,
        trainable_parameters=trainer.trainable_parameters,
        xt_widths=None,
        step_s=None,
        step_s_all=None,
        peak_memory_gb=None,
        tokens_per_s=None,
        forward_tokens_per_s=None,
        flops_per_step=None,
        mfu=None,
        flop_formula=FLOP_FORMULA,
        loss=None,
    )
    if clock.left("train_step") <= 0:
        entry["reason"] = "time budget used up"
        return entry
    rows = [{"input_ids": r, "prompt_mask": m} for r, m in zip(data["input_ids"], data["prompt_mask"])]
    collator = trainer.collators[0]
    steps, widths, flops = [], [], []
    try:
        reset_peak(device)
        for step in range(4):  # the first is a warm-up
            if step > 1 and clock.left("train_step") < 2 * max(steps):
                break
            micro = collator.noise(collator.pad(rows), step)
            synchronize(device)
            start = time.perf_counter()
            metrics = trainer.train_step([micro], num_tokens=sum(len(r["input_ids"]) for r in rows))
            synchronize(device)
            if step == 0:
                continue
            steps.append(time.perf_counter() - start)
            width = micro["xt"].shape[1] + 1  # the slot position
            widths.append(width - 1)
            flops.append(
                retrofit_step_flops(
                    backbone_config,
                    [width] * len(rows),
                    int(micro["logits_positions"].sum()),
                    per_token,
                    per_masked,
                )
            )
    except torch.OutOfMemoryError as error:
        entry["reason"] = f"out of memory: {str(error).splitlines()[0]}"
        return entry
    median = statistics.median(steps)
    tokens = sum(len(r["input_ids"]) for r in rows)
    entry.update(
        status="ok",
        xt_widths=widths,
        step_s=median,
        step_s_all=steps,
        peak_memory_gb=peak_gb(device),
        tokens_per_s=tokens / median,
        forward_tokens_per_s=statistics.median(len(rows) * (w + 1) / s for w, s in zip(widths, steps)),
        flops_per_step=statistics.median(flops),
        mfu=None
        if peak_flops is None
        else statistics.median(f / s / peak_flops for f, s in zip(flops, steps)),
        loss=metrics["loss"],
    )
    if peak_flops is None:
        entry["reason"] = "MFU: no known bf16 peak for this device (pass --peak-tflops)"
    return entry


def forward_backward_section(trainer, device, shapes, clock) -> dict:
    """(d) FlexMDM / LLaDA forward + backward at B x L on the training model (LoRA, checkpointing, autocast)."""
    from flexretrofit.training.builders import base_model

    flex = base_model(trainer.model)
    batch, length = shapes["batch"], shapes["length"]
    entry = section(
        batch=batch, length=length, llada_ms=None, flexmdm_ms=None, ratio=None, peak_memory_gb=None
    )
    entry["setup"] = (
        "training model of train_step (LoRA, activation checkpointing, autocast), MASK-position logits"
    )
    if clock.left("forward_backward") <= 0:
        entry["reason"] = "time budget used up"
        return entry
    gen = torch.Generator().manual_seed(4)
    ids = token_ids(flex.config.backbone_config, (batch, length), gen)
    masked = torch.rand(batch, length, generator=gen) < 0.5
    ids = torch.where(masked, flex.config.mask_token_id, ids).to(device)
    masked, t = masked.to(device), torch.rand(batch, generator=gen).to(device)
    autocast = trainer.accelerator.autocast

    def llada_step():
        flex.zero_grad(set_to_none=True)
        with autocast():
            logits = flex.backbone(ids, logits_positions=masked).logits
        logits.float().logsumexp(-1).mean().backward()
        synchronize(device)

    def flex_step():
        flex.zero_grad(set_to_none=True)
        with autocast():
            out = flex(ids, t, logits_positions=masked)
        (out.logits.float().logsumexp(-1).mean() + out.expected_gaps.mean()).backward()
        synchronize(device)

    try:
        reset_peak(device)
        llada, flexmdm = (statistics.median(x) for x in interleaved_times([llada_step, flex_step], repeats=3))
    except torch.OutOfMemoryError as error:
        entry["reason"] = f"out of memory: {str(error).splitlines()[0]}"
        return entry
    entry.update(
        status="ok",
        llada_ms=llada * 1e3,
        flexmdm_ms=flexmdm * 1e3,
        ratio=flexmdm / llada,
        peak_memory_gb=peak_gb(device),
    )
    return entry


# -- report -----------------------------------------------------------------------------------------


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "-"
    return (format(value, spec) if isinstance(value, float) else str(value)) + unit


def table_row(label: str, entry: dict, time: str, throughput: str = "", notes: str = "") -> tuple[str, ...]:
    reason = entry["reason"] or ""
    notes = "; ".join(n for n in (notes, reason) if n)
    return label, entry["status"], time, fmt(entry["peak_memory_gb"], ".2f"), throughput, notes


def print_table(report: dict) -> None:
    env, model = report["environment"], report["model"]
    print(
        f"gpu_check {report['mode']} on {env['device']} (torch {env['torch']}), weights {model['weights']}, "
        f"{model['parameters']:,} parameters, built in {model['build_s']:.0f} s"
    )
    rows = [("section", "status", "time", "peak GB", "throughput", "notes")]
    for name, e in report["forward"].items():
        kernels = ", ".join(e["attention_kernels"] or [])
        label = f"forward {name} {e['batch']}x{e['length']}"
        rows.append(
            table_row(label, e, fmt(e["ms"], unit=" ms"), fmt(e["tokens_per_s"], ".0f", " tok/s"), kernels)
        )
    e = report["train_step"]
    notes = f"MFU {fmt(e['mfu'], '.3f')}, x_t widths {e['xt_widths']}"
    label = f"train_step {e['micro_batch']}x{e['x1_length']}"
    rows.append(
        table_row(label, e, fmt(e["step_s"], ".3f", " s"), fmt(e["tokens_per_s"], ".0f", " tok/s"), notes)
    )
    e = report["generation"]
    notes = (
        f"fixed canvas {fmt(e['fixed_canvas_tokens_per_s'], '.0f')} tok/s, ratio {fmt(e['ratio'], '.2f')}x, "
        f"same output {e['same_output']}"
    )
    label = f"generation {e['prompts']}x{e['prompt_length']}, {e['steps']} steps"
    rows.append(
        table_row(label, e, fmt(e["flex_s"], unit=" s"), fmt(e["flex_tokens_per_s"], ".0f", " tok/s"), notes)
    )
    e = report["forward_backward"]
    notes = f"LLaDA {fmt(e['llada_ms'], unit=' ms')}, ratio FlexMDM/LLaDA {fmt(e['ratio'], '.3f')}"
    rows.append(
        table_row(
            f"forward_backward {e['batch']}x{e['length']}", e, fmt(e["flexmdm_ms"], unit=" ms"), "", notes
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    print(f"total {report['total_s']:.0f} s")


def run_section(report: dict, name: str, fn: Callable[[], dict], strict: bool) -> None:
    """Run one section; in the 8B mode an unexpected error is recorded (and the exit code set), not raised."""
    try:
        report[name] = fn()
    except Exception as error:  # noqa: BLE001 - the other sections still run and are reported
        if strict:
            raise
        report[name]["status"] = "error"
        report[name]["reason"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (what the test suite runs)")
    parser.add_argument("--weights", type=Path, help="a local LLaDA-8B folder (default: random bf16 weights)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget-s", type=float, help="total time budget in seconds (8B: 450, tiny: 120)")
    parser.add_argument(
        "--peak-tflops", type=float, help="dense bf16 peak for MFU (default: from the device name)"
    )
    parser.add_argument("--device", help="torch device (default: cuda, or cpu with --tiny)")
    parser.add_argument(
        "--layers", type=int, help="8B shape with this many blocks instead of 32 (a quick look)"
    )
    args = parser.parse_args(argv)
    if args.tiny and args.weights:
        parser.error("--weights loads an 8B checkpoint; drop --tiny (or --weights)")
    if args.weights and not (args.weights / "config.json").is_file():
        parser.error(f"--weights {args.weights} has no config.json; pass the LLaDA folder that holds it")
    if args.layers is not None and (args.layers < 1 or args.tiny or args.weights):
        parser.error("--layers takes a number >= 1 and builds the random 8B shape; drop --tiny / --weights")
    if not args.tiny and args.device is None and not torch.cuda.is_available():
        parser.error(
            "the 8B check needs a CUDA GPU; on CPU run: python benchmarks/gpu_check.py --tiny --out FILE"
        )
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")

    from flexretrofit.training import load_config

    mode = "tiny" if args.tiny else "8b"
    shapes = SHAPES[mode]
    clock = Clock(args.budget_s or shapes["budget_s"])
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype = torch.float32 if args.tiny else torch.bfloat16
    recipe_overrides = (
        ["model.dtype=float32", "train.mixed_precision=no", "lora.r=8", "lora.alpha=8"] if args.tiny else []
    )
    recipe = load_config(RECIPE, recipe_overrides)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = (
        args.peak_tflops * 1e12
        if args.peak_tflops
        else (peak_bf16_flops(name) if device.type == "cuda" else None)
    )

    started = time.perf_counter()
    model, weights = build_models(args, device, dtype, recipe)
    bc = model.config.backbone_config
    report = {
        "check": "gpu_check",
        "version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "environment": {
            "device": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "dtype": str(dtype).removeprefix("torch."),
            "peak_bf16_tflops": None if peak is None else peak / 1e12,
            "attn_implementation": bc._attn_implementation,
            "sdpa_backends": sdpa_backends(device, dtype, bc.n_heads, bc.head_dim, shapes["length"] + 1),
        },
        "model": {
            "weights": weights,
            "parameters": sum(p.numel() for p in model.backbone.parameters()),
            "retrofit_parameters": sum(p.numel() for p in model.parameters()),
            "d_model": bc.d_model,
            "n_layers": bc.n_layers,
            "vocab_size": bc.vocab_size,
            "flex_config": dict(recipe.model.flex_config),
            "build_s": time.perf_counter() - started,
        },
        "forward": {},
        "train_step": section(),
        "generation": section(),
        "forward_backward": section(),
    }
    strict = args.tiny
    run_section(report, "forward", lambda: forward_section(model, device, shapes, clock), strict)
    forward_ms = (report["forward"].get("batch") or {}).get("ms")
    run_section(
        report, "generation", lambda: generation_section(model, device, shapes, clock, forward_ms), strict
    )
    trainer = None
    try:
        trainer, data, config = training_setup(model, recipe_overrides, shapes)
    except Exception as error:  # noqa: BLE001
        if strict:
            raise
        report["train_step"].update(status="error", reason=f"setup: {type(error).__name__}: {error}")
    if trainer is not None:
        run_section(
            report, "train_step", lambda: train_section(trainer, data, config, device, clock, peak), strict
        )
        run_section(
            report,
            "forward_backward",
            lambda: forward_backward_section(trainer, device, shapes, clock),
            strict,
        )
    report["total_s"] = time.perf_counter() - clock.start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")
    failed = [k for k in ("train_step", "generation", "forward_backward") if report[k]["status"] == "error"]
    failed += [f"forward.{k}" for k, v in report["forward"].items() if v["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
