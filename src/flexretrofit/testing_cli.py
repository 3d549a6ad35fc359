"""Command line for the tiny fixtures: a tiny LLaDA checkpoint and tiny synthetic datasets (CPU, seconds).

    python -m flexretrofit.testing_cli tiny-checkpoint OUT_DIR
    python -m flexretrofit.testing_cli tiny-data OUT_DIR        # corpus.jsonl, gsm8k.jsonl, infill.jsonl

The data is generated from templates with a fixed seed (synthetic word problems and small functions in
the GSM8K and code-infilling field layouts); nothing is copied from the real datasets.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint

_NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana"]
_ITEMS = ["apples", "pencils", "stamps", "shells", "marbles", "books", "cards", "coins"]
_WORDS = (
    "the model fills in missing tokens and learns how long a text should be while the masked diffusion "
    "process inserts new positions step by step until the sequence is complete"
).split()


def tiny_corpus(num_documents: int = 96, seed: int = 0) -> list[dict[str, str]]:
    """Documents of 1 to 6 sentences (so chunk lengths vary): ``{"text": ...}``."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_documents):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = rng.sample(_WORDS, rng.randint(4, 12))
            sentences.append(" ".join(words).capitalize() + ".")
        documents.append({"text": " ".join(sentences)})
    return documents


def tiny_gsm8k(num_problems: int = 64, seed: int = 0) -> list[dict[str, str]]:
    """Synthetic two-step word problems in the GSM8K layout: ``{"question", "answer": "... #### N"}``."""
    rng = random.Random(seed)
    problems = []
    for _ in range(num_problems):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        total = a + b
        c = rng.randint(1, 9)
        left = total - c
        question = (
            f"{name} has {a} {item} and gets {b} more. Then {name} gives away {c}. How many {item} are left?"
        )
        answer = f"{name} has {a} + {b} = <<{a}+{b}={total}>>{total} {item}.\n"
        answer += f"After giving away {c}, {total} - {c} = <<{total}-{c}={left}>>{left}.\n#### {left}"
        problems.append({"question": question, "answer": answer})
    return problems


def tiny_infill(num_examples: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """Synthetic (instruction, code) pairs in the opc-sft ``educational_instruct`` field layout."""
    rng = random.Random(seed)
    examples = []
    for _ in range(num_examples):
        k, n = rng.randint(1, 9), rng.randint(2, 5)
        body = "".join(f"    x = x + {k}\n" for _ in range(n))
        code = f"def add_{k}_{n}_times(x):\n{body}    return x\n"
        examples.append({"instruction": f"Write a function that adds {k} to x, {n} times.", "code": code})
    return examples


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_tiny_data(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """``corpus.jsonl``, ``gsm8k.jsonl`` (+ ``gsm8k_eval.jsonl``) and ``infill.jsonl`` under ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "corpus": write_jsonl(tiny_corpus(seed=seed), out_dir / "corpus.jsonl"),
        "gsm8k": write_jsonl(tiny_gsm8k(seed=seed), out_dir / "gsm8k.jsonl"),
        "gsm8k_eval": write_jsonl(tiny_gsm8k(16, seed=seed + 1), out_dir / "gsm8k_eval.jsonl"),
        "infill": write_jsonl(tiny_infill(seed=seed), out_dir / "infill.jsonl"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flexretrofit.testing_cli", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    checkpoint = commands.add_parser(
        "tiny-checkpoint", help="write a tiny random LLaDA checkpoint + tokenizer"
    )
    checkpoint.add_argument("out_dir")
    checkpoint.add_argument("--seed", type=int, default=0)
    data = commands.add_parser("tiny-data", help="write tiny synthetic corpus / GSM8K / infill JSONL files")
    data.add_argument("out_dir")
    data.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "tiny-checkpoint":
        folder = save_tiny_llada_checkpoint(args.out_dir, seed=args.seed, tokenizer=build_tiny_tokenizer())
        print(f"tiny LLaDA checkpoint written to {folder}")
    else:
        for name, path in write_tiny_data(args.out_dir, seed=args.seed).items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
