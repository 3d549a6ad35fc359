"""Generate from a trained FlexMDM (flexible length) or a LLaDA model (fixed length) on the command line.

    python recipes/generate.py --model runs/tiny_retrofit/final --prompt "The model fills in" --steps 64
    python recipes/generate.py --model GSAI-ML/LLaDA-8B-Instruct --sampler mdm --chat --prompt "Hi!"

Prints each prompt's continuation and its length in tokens. ``key=value`` pairs after the flags set any
field of :class:`~flexretrofit.sampling.FlexGenerationConfig` / :class:`~flexretrofit.sampling.MDMGenerationConfig`.
"""

from __future__ import annotations

import argparse

import torch
import yaml

from flexretrofit import FlexGenerationConfig, MDMGenerationConfig, load_tokenizer
from flexretrofit.evaluation.cli import load_model, read_model_type
from flexretrofit.sampling import generate_flex, generate_mdm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a FlexMDM or LLaDA folder or hub id")
    parser.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    parser.add_argument(
        "--sampler", choices=("flex", "mdm"), default=None, help="default: flex for a FlexMDM"
    )
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn (chat template)")
    parser.add_argument("overrides", nargs="*", help="generation config fields, e.g. confidence=prob_diff")
    args = parser.parse_args(argv)

    fields = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.overrides)}
    sampler = args.sampler or ("flex" if read_model_type(args.model) == "flexmdm" else "mdm")
    config_class = FlexGenerationConfig if sampler == "flex" else MDMGenerationConfig
    unknown = sorted(set(fields) - set(config_class.sampler_fields))
    if unknown:
        raise ValueError(
            f"unknown {config_class.__name__} field(s) {unknown}; known: {list(config_class.sampler_fields)}"
        )
    config = config_class(steps=args.steps, **fields)

    tokenizer = load_tokenizer(args.model)
    model, _ = load_model(args.model, sampler=sampler, device="cuda" if torch.cuda.is_available() else "cpu")
    prompts = args.prompt
    if args.chat:
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    output = (generate_flex if sampler == "flex" else generate_mdm)(model, ids, None, config)
    for prompt, generated in zip(args.prompt, output.generated_ids()):
        text = tokenizer.decode(generated, skip_special_tokens=True)
        print(f"--- prompt: {prompt!r}\n{text}\n--- {len(generated)} tokens")


if __name__ == "__main__":
    main()
