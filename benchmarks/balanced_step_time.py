"""Step wall time with data.balance=tokens vs the fixed layout: the real recipe on 2 gloo processes (DDP).

    python benchmarks/balanced_step_time.py             # ~6 minutes on 2 CPU cores; run on a quiet machine
    python benchmarks/balanced_step_time.py --steps 10 --repeats 6   # the docs/gpu_projection.md row (~13 min)

Both arms run ``recipes/retrofit_llada.py`` on the same tiny-vocabulary LLaDA, wide enough that compute
dominates (``--d-model 512 --layers 4``), on the same corpus of long documents (almost every chunk is
``--max-length`` tokens, as in the retrofit corpus), with the same seed, so every step sees the same global
batch and the same noise; only ``data.balance`` differs. Each process has one thread and its own core.
Runs alternate (unbalanced, balanced, balanced, unbalanced, ...) so machine load hits both alike. A step's
time is the main process's ``step_time`` in ``log.jsonl``: the gradient all-reduce at the end of the step
makes it wait for the slower process. The first step of every run (warm-up) is dropped.

The last line reads ``step time balanced / unbalanced: R (95% CI lo-hi over N repeats)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Student-t 97.5% quantiles for small samples (n - 1 degrees of freedom).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256, help="chunk length (tokens)")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=4, help="rows per micro-batch when unbalanced")
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is dropped)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm, interleaved")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    for name in ("d_model", "layers", "max_length", "global_batch", "micro_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps < 2 or args.repeats < 2:
        parser.error("--steps and --repeats must be >= 2 (a warm-up step is dropped; a CI needs 2 runs)")
    if args.global_batch % (2 * args.micro_batch):
        parser.error("--global-batch must be a multiple of 2 x --micro-batch (2 processes)")
    if args.d_model % 64:
        parser.error("--d-model must be a multiple of 64 (heads of 64)")
    return args


def write_inputs(work: Path, args: argparse.Namespace) -> Path:
    """The checkpoint, a corpus of long documents and the recipe config under ``work``;
    returns the recipe config's path."""
    from flexretrofit.testing import build_tiny_tokenizer, tiny_llada, write_published_checkpoint
    from flexretrofit.testing_cli import tiny_corpus

    tokenizer = build_tiny_tokenizer()
    model = tiny_llada(
        tokenizer,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.d_model // 64,
        n_kv_heads=args.d_model // 64,
        mlp_hidden_size=2 * args.d_model,
        max_sequence_length=args.max_length + 1,
    )
    write_published_checkpoint(model, work / "llada", num_shards=1)
    tokenizer.save_pretrained(work / "llada")
    # Long documents: 40 short ones joined, so nearly every chunk is max_length tokens.
    texts = [d["text"] for d in tiny_corpus(40 * 2 * args.global_batch, seed=0)]
    random.Random(0).shuffle(texts)
    with open(work / "corpus.jsonl", "w") as f:
        for i in range(0, len(texts), 40):
            f.write(json.dumps({"text": " ".join(texts[i : i + 40])}) + "\n")
    config = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_retrofit_cpu.yaml").read_text())
    config["model"]["init_from"] = str(work / "llada")
    config["data"].update(sources=[{"path": str(work / "corpus.jsonl")}], max_length=args.max_length)
    config["train"].update(
        global_batch_size=args.global_batch,
        micro_batch_size=args.micro_batch,
        max_steps=args.steps,
        save_every=0,
        log_every=1,
    )
    config["eval"].update(every=0, num_samples=0)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_times(work: Path, config: Path, balance: str, run: int) -> list[float]:
    """Launch one run; the main process's step times after the first step."""
    out = work / f"{balance}_{run}"
    # torchrun, not `accelerate launch`: accelerate's launcher starts a single process for a CPU config
    # (it needs MPI for several); under torchrun with ACCELERATE_USE_CPU Accelerate picks MULTI_CPU over gloo.
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    command += [str(REPO / "recipes" / "retrofit_llada.py"), "--config", str(config)]
    command += [f"data.balance={balance}", f"train.output_dir={out}", "export.dir=" + str(out / "final")]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": str(REPO / "src"),
    }
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"the {balance} run failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    if (start["distributed_type"], start["num_processes"]) != ("MULTI_CPU", 2):
        sys.exit(
            f"expected 2 DDP processes, the run had {start['num_processes']} ({start['distributed_type']})"
        )
    return [r["step_time"] for r in records if r.get("event") == "train" and r["step"] > 1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        config = write_inputs(work, args)
        print(
            f"2 DDP processes (gloo, 1 thread each), LLaDA d_model {args.d_model} x {args.layers} layers, "
            f"chunks of {args.max_length} tokens, global batch {args.global_batch}, micro-batch {args.micro_batch}, "
            f"{args.steps - 1} timed steps x {args.repeats} runs per arm"
        )
        means: dict[str, list[float]] = {"none": [], "tokens": []}
        for run in range(args.repeats):
            order = ["none", "tokens"] if run % 2 == 0 else ["tokens", "none"]
            for balance in order:
                times = step_times(work, config, balance, run)
                means[balance].append(statistics.fmean(times))
                print(
                    f"run {run} data.balance={balance}: mean step {means[balance][-1]:.3f} s ({len(times)} steps)"
                )
    ratios = [b / u for b, u in zip(means["tokens"], means["none"])]
    mean = statistics.fmean(ratios)
    half = T975.get(len(ratios) - 1, 1.96) * statistics.stdev(ratios) / math.sqrt(len(ratios))
    print(
        f"mean step: unbalanced {statistics.fmean(means['none']):.3f} s, balanced {statistics.fmean(means['tokens']):.3f} s"
    )
    print(
        f"step time balanced / unbalanced: {mean:.3f} (95% CI {mean - half:.3f}-{mean + half:.3f} "
        f"over {len(ratios)} repeats)"
    )


if __name__ == "__main__":
    main()
