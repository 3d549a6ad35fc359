"""FlexMDM model costs, measured side by side in one run (CPU is fine; a GPU is used if present).

1. forward + backward time of FlexMDMForMaskedDiffusion relative to its plain LLaDA backbone
   (same weights, same batch): the price of time conditioning, the slot position and the insertion head;
2. peak memory of the loss with logits gathered at MASK positions only, against full-vocabulary
   logits at every position (the published approach), at LLaDA's vocabulary size (126,464).

    python benchmarks/bench_model.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from common import interleaved_min_times

from flexretrofit.diffusion import flexmdm_loss, masked_positions_and_targets, sample_interpolant
from flexretrofit.testing import tiny_flexmdm


def speed(batch: int, length: int, repeats: int, d_model: int, layers: int, vocab: int) -> None:
    """Forward + backward of both models on the same ids, with token logits at the MASK positions only
    (what both training objectives ask for): ``[N, V]`` with N ~ half of ``batch x length``."""
    heads = max(1, d_model // 64)
    model = tiny_flexmdm(
        seed=0,
        backbone_overrides=dict(
            d_model=d_model,
            n_layers=layers,
            n_heads=heads,
            n_kv_heads=heads,
            mlp_hidden_size=3 * d_model,
            vocab_size=vocab,
            embedding_size=vocab,
            max_sequence_length=length + 8,
        ),
    ).train()
    mask_id = model.config.mask_token_id
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 300, (batch, length), generator=gen)
    masked = torch.rand(batch, length, generator=gen) < 0.5
    ids = torch.where(masked, mask_id, ids)
    t = torch.rand(batch, generator=gen)

    def llada_step():
        model.zero_grad(set_to_none=True)
        logits = model.backbone(ids, logits_positions=masked).logits
        logits.float().logsumexp(-1).mean().backward()

    def flex_step():
        model.zero_grad(set_to_none=True)
        out = model(ids, t, logits_positions=masked)
        (out.logits.float().logsumexp(-1).mean() + out.expected_gaps.mean()).backward()

    llada, flex = interleaved_min_times([llada_step, flex_step], repeats)
    print(f"forward+backward, batch {batch} x {length}, {layers} layers d={d_model}, vocabulary {vocab:,}:")
    print(
        f"  LLaDA backbone {llada * 1e3:8.1f} ms   FlexMDM {flex * 1e3:8.1f} ms   ratio FlexMDM/LLaDA {flex / llada:.2f}"
    )


def loss_peak_memory(gather: bool, length: int) -> dict:
    """Runs in a fresh process: peak resident memory added by one loss forward+backward."""
    tok_vocab = 126464
    model = tiny_flexmdm(
        seed=0,
        backbone_overrides=dict(
            vocab_size=tok_vocab, embedding_size=tok_vocab, max_sequence_length=length + 8
        ),
    ).train()
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randint(10, 300, (1, length), generator=gen)
    real = torch.ones_like(x1, dtype=torch.bool)
    prompt = torch.zeros_like(real)
    t = torch.tensor([0.5])
    sample = sample_interpolant(
        x1,
        real,
        prompt,
        t,
        model.insertion_schedule,
        model.unmask_schedule,
        cfg.mask_token_id,
        cfg.pad_token_id,
        gen,
    )
    positions, targets, rows = masked_positions_and_targets(sample)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = model(sample.xt, t, sample.xt_attention_mask, logits_positions=positions if gather else None)
    logits = out.logits if gather else out.logits[positions]
    loss = flexmdm_loss(
        logits,
        targets,
        rows,
        out.expected_gaps,
        sample.slot_gaps,
        sample.slot_valid,
        t,
        model.insertion_schedule,
        model.unmask_schedule,
        non_prompt_lengths=sample.non_prompt_lengths,
    )
    loss.loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mb": (after - before) / 1024,
        "x_t_length": int(sample.lengths[0]),
        "masked": int(positions.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=384, help="vocabulary (LLaDA-8B: 126464)")
    parser.add_argument("--skip-memory", action="store_true", help="only the speed comparison")
    parser.add_argument("--memory-length", type=int, default=1024)
    parser.add_argument("--_memory_child", choices=["gather", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        print(json.dumps(loss_peak_memory(args._memory_child == "gather", args.memory_length)))
        return
    torch.manual_seed(0)
    for name in ("batch", "length", "repeats", "d_model", "layers", "vocab"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    speed(args.batch, args.length, args.repeats, args.d_model, args.layers, args.vocab)
    if args.skip_memory:
        return
    results = {}
    for mode in ("full", "gather"):
        cmd = [sys.executable, __file__, "--_memory_child", mode, "--memory-length", str(args.memory_length)]
        results[mode] = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
    full, gather = results["full"], results["gather"]
    print(
        f"loss peak memory, 1 x {args.memory_length} tokens at t=0.5, vocabulary 126,464 "
        f"(x_t length {gather['x_t_length']}, {gather['masked']} MASK positions):"
    )
    print(
        f"  full logits {full['peak_mb']:8.0f} MB   gather-at-MASK {gather['peak_mb']:8.0f} MB   "
        f"ratio full/gather {full['peak_mb'] / max(gather['peak_mb'], 1):.2f}"
    )


if __name__ == "__main__":
    main()
