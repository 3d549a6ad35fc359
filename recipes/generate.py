"""Generate from a trained FlexMDM (flexible length) or a LLaDA model (fixed length) on the command line.

    python recipes/generate.py --model runs/tiny_retrofit/final --prompt "The model fills in" --steps 64
    python recipes/generate.py --model GSAI-ML/LLaDA-8B-Instruct --method mdm --chat --prompt "Hi!"

Prints each prompt's continuation and its length in tokens. ``--method`` (``flexmdm`` or ``mdm``; the older
``--sampler flex|mdm`` still reads) defaults to the model's own. The model's saved generation_config.json
gives the defaults; ``--steps`` and ``key=value`` pairs after the flags override any field of
:class:`~flexretrofit.sampling.FlexGenerationConfig` / :class:`~flexretrofit.sampling.MDMGenerationConfig`.
A mistake (path, model type, flag value) prints one line and exits with status 2, before any model loads.
"""

from __future__ import annotations

import argparse
import sys

import torch
import yaml

from flexretrofit.models import (
    CheckpointError,
    TokenizerLoadError,
    load_pretrained,
    load_tokenizer,
    read_model_type,
)
from flexretrofit.models.auto import default_method, model_class, needs_retrofit
from flexretrofit.sampling import sampling_method
from flexretrofit.sampling.config import load_generation_config, resolve_generation_config
from flexretrofit.sampling.text import with_stop_ids


class UsageError(Exception):
    """A command-line mistake; main() prints it as one line and exits with status 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def parse_overrides(items: list[str]) -> dict:
    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item!r} is not a key=value generation setting (e.g. confidence=prob_diff)")
        try:
            fields[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"cannot read the value of {item!r}; quote it or fix the YAML syntax") from None
    return fields


def run(argv: list[str] | None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a FlexMDM or LLaDA folder or hub id")
    parser.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    parser.add_argument("--method", help="flexmdm or mdm (default: flexmdm for a FlexMDM, mdm for a LLaDA)")
    parser.add_argument("--sampler", help=argparse.SUPPRESS)  # the older spelling: flex or mdm
    parser.add_argument("--steps", type=int, help="sampler steps (default: the saved generation config's)")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn (chat template)")
    parser.add_argument("overrides", nargs="*", help="generation config fields, e.g. confidence=prob_diff")
    args = parser.parse_args(argv)

    fields = parse_overrides(args.overrides)
    if args.steps is not None:
        fields["steps"] = args.steps
    model_type = read_model_type(args.model)
    model_class(model_type, args.model)  # one this project loads
    flag, value = ("--method", args.method) if args.method else ("--sampler", args.sampler)
    try:
        method = sampling_method(value or default_method(model_type), key=flag)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if needs_retrofit(model_type, method.name):
        raise UsageError(
            f"{args.model} holds a {model_type!r} model (fixed length); use --method {default_method(model_type)}, "
            "or retrofit and train it first (recipes/retrofit_llada.py)"
        )
    config_class = method.config_class
    # The saved generation_config.json holds the model's own sampler's settings; another method starts from
    # its defaults. Names and values are checked before the model loads.
    own = method.name == default_method(model_type)
    try:
        saved = load_generation_config(args.model, config_class) if own else None
        resolve_generation_config(saved, config_class, fields)
    except ValueError as error:
        raise UsageError(str(error)) from None

    try:
        tokenizer = load_tokenizer(args.model)
    except TokenizerLoadError as error:
        raise UsageError(f"{error}; --model must be a checkpoint folder that holds its tokenizer") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_pretrained(args.model).to(device).eval()
    prompts = args.prompt
    if args.chat:
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    try:  # the saved config + overrides; the sampler refuses prompts it cannot use, saying why
        config = resolve_generation_config(None, config_class, fields, model)
        # A sampler with stop ids stops at EOS and <|eot_id|>, as LLaDA's chat does.
        output = method.generate(model, ids, None, config, **with_stop_ids(method, tokenizer, {}, config))
    except ValueError as error:
        raise UsageError(str(error)) from None
    for prompt, generated in zip(args.prompt, output.generated_ids()):
        text = tokenizer.decode(generated, skip_special_tokens=True)
        print(f"--- prompt: {prompt!r}\n{text}\n--- {len(generated)} tokens")


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except (UsageError, CheckpointError, FileNotFoundError) as error:
        print(f"generate.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
