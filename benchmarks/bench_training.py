"""Training throughput: length grouping + logits at MASK positions vs a fixed canvas + full logits.

    python benchmarks/bench_training.py            # tiny FlexMDM on CPU, well under 2 minutes

Both variants train the same tiny FlexMDM from the same initial weights on the same samples (one pass
over a synthetic corpus cut into chunks of at most ``--max-length`` tokens), with the same global batch
size, optimizer and loss. What differs is only what the published recipe does differently:

- ours: batches of similar-length chunks (``LengthGroupedBatchSampler``), each forward pass on the longest
  ``x_t`` of its batch with padding masked out, token logits only at MASK positions (``[N, V]``);
- published: random batches, every sample padded with EOS to ``max_length`` (PAD is visible data), the
  forward pass on the full canvas, logits at every position (``[B, L, V]``) then indexed at the MASKs.

Throughput counts the real tokens of the data (chunk lengths, not padding) per second of training steps
(forward, backward, optimizer step), so the ratio is the wall-clock speed-up on the same data.
"""

from __future__ import annotations

import argparse
import time

import torch

from flexretrofit.data import DocumentChunker, FlexMDMCollator, LengthGroupedBatchSampler, padding_efficiency
from flexretrofit.diffusion import flexmdm_loss
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm
from flexretrofit.testing_cli import tiny_corpus
from flexretrofit.training.objectives import FlexMDMObjective


def chunked_samples(tokenizer, max_length: int, num_documents: int, seed: int) -> list[dict]:
    chunker = DocumentChunker(tokenizer, max_length)
    samples = []
    for document in tiny_corpus(num_documents, seed=seed):
        for ids in chunker.chunk(document["text"]):
            samples.append({"input_ids": ids, "prompt_mask": [False] * len(ids)})
    return samples


def published_batch(
    samples: list[dict], collator: FlexMDMCollator, step: int, max_length: int, eos: int
) -> dict:
    """The published layout: EOS padding to max_length is data; x_t padded back to the full canvas."""
    padded = [{"input_ids": s["input_ids"] + [eos] * (max_length - len(s["input_ids"]))} for s in samples]
    batch = collator.noise(collator.pad(padded), step)
    extra = max_length - batch["xt"].shape[1]
    pad2 = lambda x, value: torch.nn.functional.pad(x, (0, extra), value=value)  # noqa: E731
    batch["xt"] = pad2(batch["xt"], eos)
    batch["logits_positions"] = pad2(batch["logits_positions"], False)
    batch["slot_gaps"], batch["slot_valid"] = pad2(batch["slot_gaps"], 0), pad2(batch["slot_valid"], False)
    return batch


def published_loss(model, batch, normalizer, objective: FlexMDMObjective) -> torch.Tensor:
    out = model(batch["xt"], batch["t"])  # no attention mask, full [B, L, V] logits
    masked_logits = out.logits[batch["logits_positions"]]
    return flexmdm_loss(
        masked_logits,
        batch["masked_targets"],
        batch["masked_row"],
        out.expected_gaps,
        batch["slot_gaps"],
        batch["slot_valid"],
        batch["t"],
        objective.insertion_schedule,
        objective.unmask_schedule,
        normalizer=normalizer,
    ).loss


def train_tokens_per_second(
    variant: str, samples: list[dict], batches: list[list[int]], args
) -> tuple[float, float]:
    """Real data tokens per second over ``batches`` (after ``args.warmup`` untimed steps), and the mean
    width of the forward passes."""
    model = tiny_flexmdm(
        seed=0,
        backbone_overrides={
            "n_layers": args.layers,
            "d_model": args.d_model,
            "mlp_hidden_size": 2 * args.d_model,
        },
    ).train()
    config = model.config
    collator = FlexMDMCollator.for_model(config, seed=0)
    objective = FlexMDMObjective.for_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = elapsed = 0.0
    widths = []
    for step, indices in enumerate(batches):
        rows = [samples[i] for i in indices]
        started = time.perf_counter()
        if variant == "ours":
            batch = collator.noise(collator.pad(rows), step)
            loss = objective(model, batch, batch["num_loss_tokens"]).loss
        else:
            batch = published_batch(rows, collator, step, args.max_length, config.eos_token_id)
            loss = published_loss(model, batch, batch["num_loss_tokens"], objective)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= args.warmup:
            elapsed += time.perf_counter() - started
            tokens += sum(len(r["input_ids"]) for r in rows)
            widths.append(batch["xt"].shape[1])
    return tokens / elapsed, sum(widths) / len(widths)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--documents", type=int, default=480)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tokenizer = build_tiny_tokenizer()
    samples = chunked_samples(tokenizer, args.max_length, args.documents, seed=0)
    lengths = [len(s["input_ids"]) for s in samples]
    grouped = LengthGroupedBatchSampler(
        lengths, args.batch_size, mega_batch_factor=50, seed=0
    ).global_batches(0)
    shuffled = LengthGroupedBatchSampler(
        lengths, args.batch_size, mega_batch_factor=1, seed=0
    ).global_batches(0)
    print(
        f"{len(samples)} chunks of 1..{args.max_length} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"{len(grouped)} steps of {args.batch_size}; model: {args.layers} layers, d={args.d_model}"
    )
    print(
        f"padding efficiency of x1: grouped {padding_efficiency(lengths, grouped):.2f}, "
        f"fixed canvas {sum(lengths) / (len(lengths) * args.max_length):.2f}"
    )

    ours, ours_width = train_tokens_per_second("ours", samples, grouped, args)
    published, published_width = train_tokens_per_second("published", samples, shuffled, args)
    print(
        f"ours      (length grouping + logits at MASK):   {ours:9.0f} tokens/s, mean forward width {ours_width:.0f}"
    )
    print(
        f"published (pad to {args.max_length} + full logits):       {published:9.0f} tokens/s, "
        f"mean forward width {published_width:.0f}"
    )
    print(f"speed-up: {ours / published:.2f}x")


if __name__ == "__main__":
    main()
