"""Sampling speed, measured side by side in one run (CPU is fine; a GPU is used if present).

1. generate_flex as shipped (each step on the current lengths, bucketed, logits at MASK positions only)
   against the same sampler forced onto a fixed ``max_length`` canvas with a full-vocabulary softmax at
   every position (the published sampler's cost): same model, prompts, steps and seeds, and the same
   output (checked), so the ratio is pure overhead;
2. the fixed-length MDM baseline (LLaDA's sampler) at the same number of forward passes, filling the
   canvas the cap allows.

Tokens per second = generated tokens (response lengths summed over the batch) / wall time.

    python benchmarks/bench_generation.py            # about 30 s on 2 CPU cores
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved_min_times

from flexretrofit.sampling import FlexGenerationConfig, MDMGenerationConfig, generate_flex, generate_mdm
from flexretrofit.testing import tiny_flexmdm


def generated_tokens(output) -> int:
    return int((output.lengths - output.prompt_lengths - output.suffix_lengths).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="output vocabulary (default: tiny tokenizer's)"
    )
    parser.add_argument(
        "--gap", type=float, default=1.0, help="initial expected gap per slot (sets the lengths)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = dict(
        d_model=128, n_layers=4, n_heads=4, mlp_hidden_size=384, max_sequence_length=args.max_length + 1
    )
    if args.vocab_size:
        backbone.update(vocab_size=args.vocab_size, embedding_size=args.vocab_size)
    model = tiny_flexmdm(seed=0, backbone_overrides=backbone, insertion_head_init=args.gap)
    gen = torch.Generator().manual_seed(0)
    prompts = [
        [0] + torch.randint(10, 300, (int(n),), generator=gen).tolist()
        for n in torch.randint(7, 24, (args.batch,), generator=gen)
    ]

    settings = dict(steps=args.steps, max_length=args.max_length, confidence="top_prob", seed=0)
    flex = FlexGenerationConfig(**settings)
    fixed = FlexGenerationConfig(**settings, fixed_canvas=True, full_softmax=True)
    longest_prompt = max(len(p) for p in prompts)
    num_blocks = 4 if args.steps % 4 == 0 else 1
    gen_length = (args.max_length - longest_prompt) // (8 * num_blocks) * 8 * num_blocks
    mdm = MDMGenerationConfig(steps=args.steps, gen_length=gen_length, block_length=gen_length // num_blocks)

    outputs = {}

    def run(name, sampler, config):
        def fn():
            outputs[name] = sampler(model, prompts, generation_config=config)

        return fn

    runs = [
        ("flex (current lengths, MASK-only logits)", generate_flex, flex),
        ("flex (fixed canvas, full softmax)", generate_flex, fixed),
        (f"MDM baseline (gen_length {gen_length})", generate_mdm, mdm),
    ]
    times = interleaved_min_times(
        [run(name, sampler, config) for name, sampler, config in runs], args.repeats
    )
    names = [name for name, _, _ in runs]
    if not torch.equal(outputs[names[0]].sequences, outputs[names[1]].sequences):
        raise SystemExit("fixed-canvas mode gave a different output; the comparison is void")

    lengths = outputs[names[0]].lengths - outputs[names[0]].prompt_lengths
    vocab = model.get_output_embeddings().out_features
    print(
        f"batch {args.batch}, {args.steps} steps (= forward passes), cap {args.max_length}, "
        f"4 layers d=128, vocabulary {vocab}, device {next(model.parameters()).device}"
    )
    print(
        f"flex response lengths: min {int(lengths.min())}, mean {lengths.float().mean():.0f}, max {int(lengths.max())}"
    )
    rates = []
    for name, seconds in zip(names, times):
        rate = generated_tokens(outputs[name]) / seconds
        rates.append(rate)
        print(f"  {name:45s} {seconds * 1e3:8.0f} ms   {rate:9.0f} tokens/s")
    print(f"ratio flex / fixed-canvas full-softmax (same output): {rates[0] / rates[1]:.2f}x tokens/s")
    print(f"ratio flex / MDM baseline (same forward passes):      {rates[0] / rates[2]:.2f}x tokens/s")


if __name__ == "__main__":
    main()
