"""FlexMDM model costs, measured side by side in one run (CPU is fine; a GPU is used if present).

1. forward + backward time of FlexMDMForMaskedDiffusion relative to its plain LLaDA backbone
   (same weights, same batch): the price of time conditioning, the slot position and the insertion head
   (medians of interleaved repetitions);
2. the attention-mask memory of the FlexMDM forward: a dense per-query ``[B, L+1, L+1]`` mask against
   what the model builds (a key-padding mask and the private slot's keys, or nothing when no row is padded);
3. peak memory of the loss with logits gathered at MASK positions only, against full-vocabulary
   logits at every position (the published approach), at LLaDA's vocabulary size (126,464).

    python benchmarks/bench_model.py
    python benchmarks/bench_model.py --d-model 1024 --layers 8 --length 256 --batch 2 --vocab 126464 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

# torch and flexretrofit (~7 s to import) are imported where they are used, after main() checked the flags.


def speed(
    batch: int,
    length: int,
    repeats: int,
    d_model: int,
    layers: int,
    vocab: int,
    lora: bool = False,
    modulation_group_size: int | None = None,
) -> None:
    """Forward + backward of both models on the same ids, with token logits at the MASK positions only
    (what both training objectives ask for): ``[N, V]`` with N ~ half of ``batch x length``.

    ``lora``: as in the retrofit, the backbone is frozen and LoRA (r = 16, the published targets) and the
    new modules train, so the backward computes activation gradients, not the backbone's weight gradients.
    ``modulation_group_size``: blocks sharing one AdaLN layer; the default (None) is the shipped (and
    published) FlexMDM's, not the tiny test models' 1.
    """
    import torch
    from common import interleaved_median_times

    from flexretrofit.models.flexmdm import FlexMDMConfig
    from flexretrofit.models.lora import apply_lora
    from flexretrofit.testing import tiny_flexmdm

    if modulation_group_size is None:
        modulation_group_size = FlexMDMConfig.modulation_group_size
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
        modulation_group_size=modulation_group_size,
    ).train()
    if lora:
        model = apply_lora(model, "published", r=16, alpha=16, dropout=0.0).get_base_model()
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

    llada, flex = interleaved_median_times([llada_step, flex_step], repeats)
    print(
        f"forward+backward, batch {batch} x {length}, {layers} layers d={d_model}, vocabulary {vocab:,}"
        f"{', frozen backbone + LoRA' if lora else ''}, AdaLN group size {modulation_group_size}"
        f" (median of {repeats}, interleaved):"
    )
    print(
        f"  LLaDA backbone {llada * 1e3:8.1f} ms   FlexMDM {flex * 1e3:8.1f} ms   ratio FlexMDM/LLaDA {flex / llada:.2f}"
    )


def attention_mask_bytes(batch: int, length: int) -> dict[str, int]:
    """Bytes of the FlexMDM forward's attention masks at ``[batch, length]`` (``length + 1`` with the slot).

    ``dense``: the per-query boolean mask ``[B, L+1, L+1]`` (SDPA turns it into an additive ``[B, 1, L+1, L+1]``
    bias in the model dtype on every call: twice that in bf16); ``padded`` / ``unpadded``: the tensors of
    the model's :class:`~flexretrofit.models.llada.AttentionPattern` for a batch with / without padding.
    """
    import torch

    from flexretrofit.models.llada import attention_pattern

    n = length + 1
    lengths = torch.full((batch,), length)
    lengths[0] = max(1, length // 2)

    def pattern_bytes(row_lengths):
        keys = torch.arange(n)[None] < row_lengths[:, None]
        pattern = attention_pattern(keys, row_lengths, n)
        masks = (pattern.mask, pattern.private_mask)
        return sum(m.numel() * m.element_size() for m in masks if m is not None)

    return {
        "dense": batch * n * n,
        "padded": pattern_bytes(lengths),
        "unpadded": pattern_bytes(torch.full((batch,), length)),
    }


def print_mask_memory(shapes: list[tuple[int, int]]) -> None:
    print("attention-mask memory of one FlexMDM forward (bool bytes; SDPA's bf16 bias of a dense mask: x2):")
    for batch, length in shapes:
        sizes = attention_mask_bytes(batch, length)
        print(
            f"  {batch} x {length}: dense [B, L+1, L+1] {sizes['dense']:>12,} B   "
            f"key padding + private slot {sizes['padded']:>8,} B   no padding {sizes['unpadded']} B"
        )


def loss_peak_memory(gather: bool, length: int) -> dict:
    """Runs in a fresh process: peak resident memory added by one loss forward+backward."""
    import torch

    from flexretrofit.diffusion import flexmdm_loss, masked_positions_and_targets, sample_interpolant
    from flexretrofit.testing import tiny_flexmdm

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=384, help="vocabulary (LLaDA-8B: 126464)")
    parser.add_argument(
        "--modulation-group-size",
        type=int,
        help="blocks sharing one AdaLN layer (default: the shipped FlexMDM's)",
    )
    parser.add_argument("--lora", action="store_true", help="frozen backbone + LoRA, as in the retrofit")
    parser.add_argument("--skip-memory", action="store_true", help="only the speed comparison")
    parser.add_argument("--memory-length", type=int, default=1024)
    parser.add_argument("--_memory_child", choices=["gather", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory_child:
        print(json.dumps(loss_peak_memory(args._memory_child == "gather", args.memory_length)))
        return
    for name in ("batch", "length", "repeats", "d_model", "layers", "vocab", "modulation_group_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    import torch

    torch.manual_seed(0)
    speed(
        args.batch,
        args.length,
        args.repeats,
        args.d_model,
        args.layers,
        args.vocab,
        args.lora,
        args.modulation_group_size,
    )
    print_mask_memory(sorted({(args.batch, args.length), (8, 1024)}))
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
