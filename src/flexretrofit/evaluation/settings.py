"""The settings of an evaluation run, for the command line: one table of options (each a flag, a YAML key
and a summary field), layered from defaults, presets, a YAML file and flags, then checked.

Priority, lowest first: the built-in defaults (the run and sampler options here, the task's own options and
sampler defaults in its module of :mod:`flexretrofit.evaluation.tasks`), a named ``--preset``, a YAML
``--config`` file (flat ``option_name: value`` pairs, the flag names with ``_`` or ``-``) and the flags.
Every value is checked here, before a tokenizer, a data set or a model is loaded: its type, that a
number is finite and in range, and the settings that depend on each other (``k <= num_samples``,
``shard_index < num_shards``). A mistake raises :class:`EvalConfigError` with one line that names the
flag or the file and line it came from and says what to pass instead.

The method is ``--method flexmdm|mdm`` (``--sampler`` and the YAML key ``sampler`` still read, with the
old spelling ``flex`` for ``flexmdm``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.generators import PER_CALL_FIELDS, tokens_to_ids
from flexretrofit.evaluation.tasks import TASKS, task_class
from flexretrofit.evaluation.tasks.base import EvalConfigError, Option, int_or_none, switch
from flexretrofit.methods import METHODS, OLD_SPELLINGS
from flexretrofit.sampling import build_generation_config
from flexretrofit.sampling.config import CONFIDENCE_METHODS, MAX_STEPS, REMASKING_METHODS
from flexretrofit.sampling.methods import sampling_method
from flexretrofit.tokenizer import stop_token_ids

GSM8K = "gsm8k"
INFILL = "humaneval_infill"
BENCHMARKS = tuple(TASKS)
# The sampler settings of a run without a preset and of each preset, by task and method (from the tasks).
DEFAULT_SAMPLER_SETTINGS = {name: task.generation_defaults for name, task in TASKS.items()}
PRESETS = {
    preset: {name: task.presets[preset] for name, task in TASKS.items() if preset in task.presets}
    for preset in sorted({preset for task in TASKS.values() for preset in task.presets})
}

RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        None,
        "checkpoint folder or hub id: a FlexMDM or a LLaDA (told apart by config.json model_type)",
    ),
    Option("tokenizer", None, "tokenizer folder or hub id (default: the model's)"),
    Option(
        "method",
        "flexmdm",
        "flexmdm: FlexMDM flexible-length sampler; mdm: LLaDA's fixed-length baseline "
        "(--sampler and 'flex' still read)",
        choices=METHODS,
        aliases=("sampler",),
        spellings=OLD_SPELLINGS,
    ),
    Option(
        "preset", None, "named sampler settings (published: method doc, section 7)", choices=tuple(PRESETS)
    ),
    switch(
        "fresh_retrofit",
        False,
        "with --method flexmdm and a LLaDA model: evaluate a fresh, untrained retrofit (demo only)",
    ),
    Option("output_dir", None, "results folder (default: runs/eval/<benchmark>-<method>)"),
    Option(
        "limit", None, "only the first N examples (GSM8K) or tasks (infilling)", type=int_or_none, minimum=1
    ),
    Option("batch_size", 8, "prompts per sampler call", type=int, minimum=1),
    Option("seed", 0, "base seed; row i uses seed + i", type=int, minimum=0),
    Option(
        "dtype",
        "auto",
        "model dtype (auto: bfloat16 on a GPU that has it, else float32)",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    Option("device", None, "device (default: Accelerate's device for this process)"),
    Option(
        "num_shards",
        None,
        "split the run into N independent jobs (instead of Accelerate processes)",
        type=int_or_none,
        minimum=1,
    ),
    Option("shard_index", None, "which of --num-shards this job runs (0-based)", type=int_or_none, minimum=0),
    switch(
        "merge_only",
        False,
        "only merge the shard results and write the summary (refused, naming the shards, while rows are missing)",
    ),
    switch("progress", True, "show a progress bar"),
)
SAMPLER_OPTIONS: tuple[Option, ...] = (
    # defaults per task and method: each task's generation_defaults
    Option(
        "steps", None, "sampler steps (forward passes)", type=int, scope="both", minimum=1, maximum=MAX_STEPS
    ),
    Option("temperature", 0.0, "0 = argmax tokens", type=float, scope="both", minimum=0),
    Option(
        "suppress_tokens",
        [],
        "tokens never generated, as spelled (e.g. '<|eot_id|>'); mdm: pass the EOS token for a base model",
        many=True,
        scope="both",
    ),
    Option(
        "confidence",
        "top_prob",
        "which MASKs to unmask first",
        choices=CONFIDENCE_METHODS,
        scope="flexmdm",
    ),
    switch("sliding_window", False, "rank only a left window of MASKs", scope="flexmdm"),
    Option(
        "window_scale",
        15.0,
        "window = min(floor(a K), max_window) MASKs",
        type=float,
        scope="flexmdm",
        minimum=0,
        strict=True,
    ),
    Option("max_window", 32, "cap of the window", type=int, scope="flexmdm", minimum=1),
    Option(
        "max_length",
        None,
        "cap on prompt + response tokens (default: the model's)",
        type=int_or_none,
        scope="flexmdm",
        minimum=1,
    ),
    Option("bucket_size", 16, "canvas width rounding", type=int, scope="flexmdm", minimum=1),
    Option(
        "gen_length",
        None,
        "MASKs after the prompt (or between prefix and suffix)",
        type=int,
        scope="mdm",
        minimum=1,
    ),
    Option("block_length", None, "semi-autoregressive block size", type=int, scope="mdm", minimum=1),
    Option("cfg_scale", 0.0, "classifier-free guidance (0 = off)", type=float, scope="mdm", minimum=0),
    Option(
        "remasking",
        "low_confidence",
        "which MASKs to unmask first",
        choices=REMASKING_METHODS,
        scope="mdm",
    ),
)
SAMPLER_SCOPES = {method: ("both", method) for method in METHODS}
# Settings the rows do not depend on: left out of run_config.json, so a rerun into the same folder may
# change them (every other setting must stay the same, see harness.check_run_config).
NOT_IN_FINGERPRINT = {
    "output_dir", "limit", "batch_size", "num_shards", "shard_index", "merge_only", "progress", "device",
    "config", "preset", "sandbox_workers", "k",
}  # fmt: skip


OPTIONS: tuple[Option, ...] = (
    *RUN_OPTIONS,
    *(option for task in TASKS.values() for option in task.options),
    *SAMPLER_OPTIONS,
)


def options_for(benchmark: str) -> list[Option]:
    """The options of one benchmark's entry point: run options, the task's own, sampler options."""
    return [*RUN_OPTIONS, *task_class(benchmark).options, *SAMPLER_OPTIONS]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are :class:`EvalConfigError` (one line, no usage block)."""

    def error(self, message: str):
        raise EvalConfigError(f"{message}; see --help")


def build_parser(benchmark: str) -> argparse.ArgumentParser:
    """The parser of one benchmark's entry point; every flag defaults to "not given" (layered later)."""
    parser = _Parser(
        description=f"{task_class(benchmark).title} of a FlexMDM (flexible-length sampler) or an MDM baseline.",
        epilog=_defaults_epilog(benchmark),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML file of settings (keys: the flag names, with _ or -)")
    groups = {
        "run": parser.add_argument_group("run"),
        "both": parser.add_argument_group("sampler (both)"),
        **{method: parser.add_argument_group(f"sampler: {method}") for method in METHODS},
    }
    for option in options_for(benchmark):
        help_text = (
            option.help
            if option.scope != "run" or option.default is None
            else f"{option.help} (default: {option.default!r})"
        )
        group = groups[option.scope]
        flags = [_flag(name) for name in (option.name, *option.aliases)]
        if option.flag:
            group.add_argument(
                *flags, dest=option.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            group.add_argument(
                *flags,
                dest=option.name,
                type=option.read if option.spellings else option.type,
                choices=option.choices,
                nargs="+" if option.many else None,
                help=help_text,
            )
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _defaults_epilog(benchmark: str) -> str:
    lines = ["Priority of settings: flags > --config YAML > --preset > defaults; all go into summary.json."]
    task = task_class(benchmark)
    for method in METHODS:
        lines.append(f"{method} sampler defaults: {task.generation_defaults[method]}")
        for name, preset in task.presets.items():
            lines.append(f"  --preset {name}: {preset[method]}")
    return "\n".join(lines)


def resolve_settings(benchmark: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Every setting of a run, layered (defaults < preset < YAML config < flags) and checked.

    Raises:
        EvalConfigError: a bad flag, YAML file or value; a setting of the other sampler; no ``--model``.
    """
    task = task_class(benchmark)
    given = vars(build_parser(benchmark).parse_args(argv))
    config_path = given.pop("config", None)
    from_file, file_origins = read_config_file(benchmark, config_path)
    explicit = {**from_file, **given}
    origins = {**file_origins, **{name: _flag(name) for name in given}}
    options = {option.name: option for option in options_for(benchmark)}

    settings = {name: option.default for name, option in options.items()}
    method = explicit.get("method", settings["method"])
    settings.update(task.generation_defaults[method])
    preset = explicit.get("preset")
    if preset is not None:
        settings.update(task.presets[preset][method])
    settings.update(explicit)

    other = sorted(name for name in explicit if options[name].scope not in ("run", *SAMPLER_SCOPES[method]))
    if other:
        named = ", ".join(origins[name] for name in other)
        raise EvalConfigError(
            f"{named}: settings of the other sampler, not of --method {method}; remove them"
        )
    # Keep only what this run uses: the summary then lists no setting that had no effect.
    for name, option in options.items():
        if option.scope not in ("run", *SAMPLER_SCOPES[method]):
            settings.pop(name, None)
    required = set(task.generation_defaults[method])
    for name, value in list(settings.items()):
        label = origins.get(name, f"the default of {_flag(name)}")
        settings[name] = check_value(options[name], value, label, allow_none=name not in required)
    check_combination(settings, origins)
    if settings["output_dir"] is None:
        settings["output_dir"] = str(Path("runs") / "eval" / f"{benchmark}-{method}")
    settings["config"] = str(Path(config_path).resolve()) if config_path is not None else None
    return settings


def read_config_file(benchmark: str, path: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of a YAML file, and for each one where it came from (``"eval.yaml, line 3: steps"``).

    Raises:
        EvalConfigError: no such file, not YAML, not a mapping, an unknown key.
    """
    if path is None:
        return {}, {}
    import yaml

    path_obj = Path(path)
    if not path_obj.is_file():
        raise EvalConfigError(f"no config file at {path}; pass a YAML file of 'option: value' pairs")
    text = path_obj.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise EvalConfigError(
            f"{path}{where}: not valid YAML ({problem}); write one 'option: value' pair per line"
        ) from None
    if loaded is None:
        return {}, {}
    if not isinstance(loaded, dict):
        raise EvalConfigError(
            f"{path} must hold a mapping of 'option: value' pairs, got a {type(loaded).__name__}"
        )
    lines = {
        str(key.value).replace("-", "_"): key.start_mark.line + 1
        for key, _ in (node.value if isinstance(node, yaml.MappingNode) else [])
    }
    options = {option.name: option for option in options_for(benchmark)}
    # Old key names (sampler: method) read as the option's name.
    renamed = {alias: option.name for option in options.values() for alias in option.aliases}
    lines = {renamed.get(name, name): line for name, line in lines.items()}
    values = {
        renamed.get(key, key): value
        for key, value in ((str(k).replace("-", "_"), v) for k, v in loaded.items())
    }
    origins = {name: f"{path}, line {lines.get(name, '?')}: {name}" for name in values}
    unknown = sorted(set(values) - set(options), key=lambda name: lines.get(name, 0))
    if unknown:
        raise EvalConfigError(
            f"{path}, line {lines.get(unknown[0], '?')}: unknown setting {unknown[0]!r}; "
            f"the settings are {sorted(options)}"
        )
    for name, value in values.items():
        value = [value] if options[name].many and not isinstance(value, list) else value
        # Checked here too, so that a mistake in the file is reported even where a flag overrides it.
        values[name] = check_value(options[name], value, origins[name])
    return values, origins


def check_value(option: Option, value: Any, label: str, *, allow_none: bool = True) -> Any:
    """``value`` of ``option`` in its canonical type (an int given for a float becomes a float).

    Raises:
        EvalConfigError: wrong type, a choice not offered, a number that is not finite or out of range.
    """
    if option.many:
        if not isinstance(value, (list, tuple)) or (not value and option.default != []):
            raise EvalConfigError(f"{label} must be a non-empty list, got {value!r}")
        return [_check_one(option, item, label, allow_none=False) for item in value]
    return _check_one(option, value, label, allow_none=allow_none)


def _check_one(option: Option, value: Any, label: str, *, allow_none: bool) -> Any:
    if option.spellings and isinstance(value, str):
        value = option.spellings.get(value, value)
    if value is None:
        if option.default is None and allow_none:
            return None
        _refuse(option, value, label)
    if option.flag:
        if not isinstance(value, bool):
            _refuse(option, value, label)
        return value
    if option.type in (int, int_or_none, float):
        is_number = isinstance(value, (int, float)) if option.type is float else isinstance(value, int)
        if isinstance(value, bool) or not is_number or not math.isfinite(value):
            _refuse(option, value, label)
        value = float(value) if option.type is float else value
        if option.minimum is not None and (
            value <= option.minimum if option.strict else value < option.minimum
        ):
            _refuse(option, value, label)
        if option.maximum is not None and value > option.maximum:
            _refuse(option, value, label)
        return value
    if not isinstance(value, str) or (option.choices is not None and value not in option.choices):
        _refuse(option, value, label)
    return value


def _refuse(option: Option, value: Any, label: str) -> NoReturn:
    raise EvalConfigError(f"{label}: got {value!r}; pass {_requirement(option)} ({option.help})")


def _requirement(option: Option) -> str:
    if option.flag:
        return "true or false"
    if option.choices is not None:
        return f"one of {list(option.choices)}"
    if option.type not in (int, int_or_none, float):
        return "text"
    kind = "a finite number" if option.type is float else "an integer"
    if option.minimum is None:
        return kind
    bound = option.minimum if option.type is float else int(option.minimum)
    text = f"{kind} {'>' if option.strict else '>='} {bound}"
    if option.maximum is not None:
        text += f" and <= {option.maximum if option.type is float else int(option.maximum)}"
    return text


def check_combination(settings: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """The checks that involve several settings (each value is already of the right type and range)."""

    def name(option: str) -> str:
        return origins.get(option, _flag(option))

    if not settings["model"]:
        raise EvalConfigError("no model: pass --model (a checkpoint folder or hub id)")
    if (settings["num_shards"] is None) != (settings["shard_index"] is None):
        raise EvalConfigError("give --num-shards and --shard-index together (or neither, to use Accelerate)")
    if settings["num_shards"] is not None and settings["shard_index"] >= settings["num_shards"]:
        raise EvalConfigError(
            f"{name('shard_index')} is {settings['shard_index']}, but the shards are numbered "
            f"0..{settings['num_shards'] - 1} ({name('num_shards')} {settings['num_shards']})"
        )
    if "k" in settings:
        too_big = [k for k in settings["k"] if k > settings["num_samples"]]
        if too_big:
            raise EvalConfigError(
                f"{name('k')} asks for pass@{too_big[0]}, which needs at least {too_big[0]} samples per "
                f"task, but {name('num_samples')} is {settings['num_samples']}; raise --num-samples or drop "
                f"{too_big[0]} from --k"
            )
    if settings["device"] is not None:
        _check_device(settings["device"], name("device"))
    if settings["output_dir"] is not None:
        check_output_dir(settings["output_dir"], name("output_dir"))


def check_output_dir(output_dir: str | os.PathLike, label: str = "--output-dir") -> None:
    """Refuse a results folder that could not be created or written, before any model is loaded.

    Raises:
        EvalConfigError: ``output_dir`` is a file, lies under a file, or its nearest existing folder is
            not writable.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise EvalConfigError(f"{label} {output_dir} is a file; pass a folder for the results")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EvalConfigError(
            f"{label} {output_dir} cannot be created: {existing} is a file, not a folder; "
            "pass a folder path for the results"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalConfigError(
            f"{label} {output_dir} cannot be written: no write permission in {existing}; "
            "pass a folder you can write to"
        )


def _check_device(device: str, label: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise EvalConfigError(f"{label} {device!r} is not a device; pass e.g. cpu, cuda or cuda:1") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise EvalConfigError(f"{label} {device!r}: no CUDA device is available here; pass --device cpu")


def sampler_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved settings that belong to the chosen sampler (token strings not yet turned into ids)."""
    scopes = SAMPLER_SCOPES[settings["method"]]
    names = [option.name for option in OPTIONS if option.scope in scopes]
    return {name: settings[name] for name in names if name in settings}


def build_sampler_config(settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, benchmark: str):
    """The sampler config of the run's method: its settings, the seed, and suppressed tokens as ids (plus
    those the task never wants generated, e.g. the boundary marker of the infilling layout)."""
    values = sampler_settings(settings)
    try:
        suppressed = tokens_to_ids(tokenizer, values.pop("suppress_tokens") or [])
        suppressed += task_class(benchmark).suppressed_token_ids(settings, tokenizer)
        values["suppress_tokens"] = sorted(set(suppressed))
        # A sampler that ends the answer at a stop token gets EOS and <|eot_id|>, as LLaDA's own evaluation.
        if "eos_token_id" in sampling_method(settings["method"]).config_class.sampler_fields:
            values["eos_token_id"] = stop_token_ids(tokenizer)
        values["seed"] = settings["seed"]
        return build_generation_config(settings["method"], values, hidden_fields=PER_CALL_FIELDS)
    except ValueError as error:
        raise EvalConfigError(f"invalid sampler settings: {error}") from error
