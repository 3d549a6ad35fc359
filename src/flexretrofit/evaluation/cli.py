"""Command line of the GSM8K and HumanEval-infilling evaluations (the ``eval/*.py`` scripts call it).

    python eval/gsm8k.py --model runs/instruct_gsm8k_8b/final --data gsm8k_test.jsonl --preset published
    python eval/humaneval_infill.py --model runs/instruct_infill_8b/final --variant single_line
    accelerate launch --num_processes 8 eval/gsm8k.py --model ... --data ...     # one shard per process

A thin layer over the harness (:func:`flexretrofit.evaluation.harness.run_benchmark`). Every input is
checked before the model is loaded, cheapest first: the settings (:mod:`.settings`, layered from
defaults, ``--preset``, ``--config`` YAML and flags), the checkpoint's config.json
(:func:`check_model`), the data (the task's :meth:`~flexretrofit.evaluation.tasks.Task.load`), the
tokenizer and sampler config, and any results already in ``--output-dir``. A mistake ends the program
with one line on stderr and exit code 2; results that cannot be written (a full disk) end it with one
line and exit code 1, and the rerun resumes.

The command line is two modules: this one (the run: model checks and loading, the process layout, the
summary's run info) and :mod:`.settings` (every option, layered and checked). The method
(``--method flexmdm|mdm``) is looked up in the sampling and model tables, never branched on.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from flexretrofit.evaluation.generators import SamplerGenerator, generation_settings
from flexretrofit.evaluation.harness import (
    IncompleteResults,
    RunConfigMismatch,
    check_results_files,
    check_run_config,
    merge_and_report,
    run_benchmark,
)
from flexretrofit.evaluation.results import (
    DISK_FULL,
    ResultsFileError,
    ResultsWriteError,
    results_write_message,
)
from flexretrofit.evaluation.settings import (
    GSM8K,
    INFILL,
    NOT_IN_FINGERPRINT,
    EvalConfigError,
    build_sampler_config,
    resolve_settings,
)
from flexretrofit.evaluation.tasks import task_class
from flexretrofit.models import (
    CheckpointError,
    FlexMDMForMaskedDiffusion,
    TokenizerLoadError,
    load_pretrained,
    load_tokenizer,
    read_model_type,
    resolve_dtype,
)
from flexretrofit.models.auto import MODEL_TYPE_METHODS, load_config, needs_retrofit
from flexretrofit.run_lock import OutputDirBusy, lock_output_dir
from flexretrofit.sampling.methods import sampling_method

__all__ = ["evaluate", "gsm8k_main", "infill_main", "load_model", "main"]
logger = logging.getLogger(__name__)
# Mistakes in what the user passed: reported as one line with exit code 2 (never a traceback).
USER_ERRORS = (
    EvalConfigError,
    RunConfigMismatch,
    ResultsFileError,
    IncompleteResults,
    FileNotFoundError,
    OutputDirBusy,
)
EXIT_USAGE = 2
EXIT_WRITE_FAILED = 1  # results could not be written (disk full...): not a usage mistake


def evaluate(benchmark: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run one benchmark with resolved ``settings`` (see :func:`resolve_settings`).

    Returns the summary on the process that wrote it, else None.
    """
    method, model_path = settings["method"], settings["model"]
    model_type = check_model(model_path, method=method, fresh_retrofit=settings["fresh_retrofit"])
    task_type = task_class(benchmark)
    examples = task_type.load(settings)
    tokenizer = load_eval_tokenizer(settings["tokenizer"] or model_path, model_path)
    generation_config = build_sampler_config(settings, tokenizer, benchmark)
    task = task_type.from_settings(settings, tokenizer, examples)
    output_dir = Path(settings["output_dir"])
    check_results_files(output_dir)
    layout = process_layout(settings)
    # One run per folder (per shard of independent jobs): a second would write every row again.
    if layout.is_merger:
        shard = f"shard{layout.rank}-of-{layout.world_size}" if settings["num_shards"] is not None else ""
        lock_output_dir(output_dir, shard, what="--output-dir")
    dtype = resolve_dtype(settings["dtype"], layout.device)
    suppressed_text = tokenizer.convert_ids_to_tokens(generation_config.suppress_tokens or [])
    sampler = sampling_method(method)
    run_info: dict[str, Any] = {
        "model": {"path": settings["model"]},
        "sampler": {
            "method": method,
            "function": (sampler.infill if task_type.infilling else sampler.generate).__name__,
            **generation_settings(generation_config),
            "suppress_tokens_text": suppressed_text,
        },
        "settings": dict(settings),
        "environment": environment_info(layout),
    }
    if settings["merge_only"]:
        if not layout.is_merger:
            return None
        return merge_and_report(output_dir, task, run_info, require_complete=True)
    expected_model = {
        "path": str(model_path),
        "resolved_path": str(Path(model_path).resolve()) if Path(model_path).exists() else None,
        "model_type": model_type,
        "fresh_retrofit": needs_retrofit(model_type, method),
        "dtype": str(dtype).removeprefix("torch."),
    }
    # The rows already in output_dir must come from these settings: known now, so checked before loading.
    early = _fingerprint(benchmark, settings, expected_model, run_info["sampler"])
    check_run_config(output_dir, early, write=False, only_given=True)

    model, model_info = load_model(
        model_path,
        method=method,
        dtype=dtype,
        device=layout.device,
        fresh_retrofit=settings["fresh_retrofit"],
        seed=settings["seed"],
    )
    generator = SamplerGenerator(model, tokenizer, generation_config, infilling=task_type.infilling)
    run_info["model"] = model_info
    run_info["sampler"] = {**generator.settings(), "suppress_tokens_text": suppressed_text}
    return run_benchmark(
        task,
        generator,
        output_dir,
        run_info=run_info,
        fingerprint=_fingerprint(benchmark, settings, model_info, run_info["sampler"]),
        rank=layout.rank,
        world_size=layout.world_size,
        batch_size=settings["batch_size"],
        max_prompt_tokens=generator.max_prompt_tokens,
        progress=settings["progress"],
        is_merger=layout.is_merger,
        barrier=layout.barrier,
    )


def _fingerprint(
    benchmark: str,
    settings: Mapping[str, Any],
    model_info: Mapping[str, Any],
    sampler_info: Mapping[str, Any],
) -> dict[str, Any]:
    """What the rows depend on (``run_config.json``): every setting not in NOT_IN_FINGERPRINT, the model
    and the sampler settings."""
    fingerprint = {
        key: value
        for key, value in settings.items()
        if key not in NOT_IN_FINGERPRINT and key not in sampler_info
    }
    fingerprint.update(
        benchmark=benchmark,
        model=model_info["resolved_path"] or model_info["path"],
        model_type=model_info["model_type"],
        fresh_retrofit=model_info["fresh_retrofit"],
        dtype=model_info["dtype"],
        sampler=dict(sampler_info),
    )
    return fingerprint


def main(benchmark: str, argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Entry point: parse, run, print where the results are.

    A mistake in the settings, files or model exits with code 2 and one line on stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings: dict[str, Any] = {}
    try:
        settings = resolve_settings(benchmark, argv)
        summary = evaluate(benchmark, settings)
    except USER_ERRORS as error:
        _fail(str(error), EXIT_USAGE)
    except ResultsWriteError as error:
        _fail(str(error), EXIT_WRITE_FAILED)
    except OSError as error:  # a full disk met outside the results files (e.g. a cache)
        if error.errno not in DISK_FULL:
            raise
        where = error.filename or settings.get("output_dir") or "the output folder"
        _fail(results_write_message(where, error), EXIT_WRITE_FAILED)
    if summary is not None:
        headline = {key: summary[key] for key in ("accuracy", "ci95", "pass@1", "num_rows") if key in summary}
        print(
            json.dumps({"summary": str(Path(settings["output_dir"]) / "summary.json"), **headline}),
            file=sys.stdout,
        )
    return summary


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
    raise SystemExit(code) from None


def gsm8k_main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    return main(GSM8K, argv)


def infill_main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    return main(INFILL, argv)


# ------------------------------------------------------------------------------------------------
# the model: checked from config.json first, loaded last
# ------------------------------------------------------------------------------------------------
MODEL_TYPES = tuple(sorted(MODEL_TYPE_METHODS))


def check_model(path: str, *, method: str, fresh_retrofit: bool = False) -> str:
    """The checkpoint's ``model_type``, after checking that ``method`` can run it (config.json only).

    Raises:
        FileNotFoundError: a local path that is not a folder with config.json.
        EvalConfigError: config.json unreadable or not reachable on the hub, not a FlexMDM or LLaDA
            checkpoint, or one that runs ``method`` only once retrofitted and no ``fresh_retrofit``.
    """
    try:
        model_type = read_model_type(path)
    except CheckpointError as error:  # unreadable config.json, no model_type, hub not reachable
        raise EvalConfigError(str(error)) from None
    if model_type not in MODEL_TYPES:
        raise EvalConfigError(
            f"{path}: config.json model_type is {model_type!r}; this evaluation runs "
            f"{' and '.join(map(repr, MODEL_TYPES))} checkpoints"
        )
    if needs_retrofit(model_type, method) and not fresh_retrofit:
        raise EvalConfigError(
            f"{path} is a {model_type} checkpoint; the {method} sampler needs a FlexMDM. Evaluate a "
            f"retrofit (recipes/retrofit_llada.py), use --method {MODEL_TYPE_METHODS[model_type]}, or pass "
            "--fresh-retrofit to run an untrained retrofit of it (a smoke test, not a result)"
        )
    return model_type


def load_eval_tokenizer(path: str, model_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer at ``path``, checked against the mask id in ``model_path``'s config.json."""
    try:
        tokenizer = load_tokenizer(path)
    except TokenizerLoadError as error:
        raise EvalConfigError(
            f"{error}; pass --tokenizer with the model's tokenizer folder or hub id"
        ) from error
    mask_id = _config_mask_id(model_path)
    if tokenizer.mask_token_id != mask_id:
        raise EvalConfigError(
            f"the tokenizer's mask id {tokenizer.mask_token_id} is not the model's {mask_id}; "
            "pass the model's own tokenizer (--tokenizer)"
        )
    return tokenizer


def _config_mask_id(path: str) -> int | None:
    try:
        return load_config(path).mask_token_id
    except (OSError, ValueError, TypeError) as error:
        raise EvalConfigError(
            f"{path}: config.json cannot be read as a model config ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}); pass a FlexMDM or LLaDA checkpoint folder"
        ) from error


def load_model(
    path: str,
    *,
    method: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    fresh_retrofit: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate and what the summary says about it.

    A ``flexmdm`` checkpoint runs with either method. A ``llada`` checkpoint runs with the MDM sampler;
    with ``method="flexmdm"`` only when ``fresh_retrofit`` asks for an untrained retrofit of it (new
    modules from ``seed``): useful for smoke tests and demos, not for results.

    Raises:
        FileNotFoundError / EvalConfigError: as :func:`check_model`, or a checkpoint whose weights cannot
            be loaded (:class:`~flexretrofit.models.CheckpointError`, one line naming the file).
    """
    model_type = check_model(path, method=method, fresh_retrofit=fresh_retrofit)
    try:
        model = load_pretrained(path, dtype=dtype)
    except CheckpointError as error:  # a missing config field, a truncated shard, keys that do not match
        raise EvalConfigError(str(error)) from None
    retrofitted = needs_retrofit(model_type, method)
    if retrofitted:
        torch.manual_seed(seed)
        model = FlexMDMForMaskedDiffusion.from_llada(model)
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


# ------------------------------------------------------------------------------------------------
# processes: which slice of the task this process runs, and what the summary records about the machine
# ------------------------------------------------------------------------------------------------
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
    a plain ``python`` run is one process of one. ``settings`` are already checked (:mod:`.settings`)."""
    if settings["num_shards"] is not None:
        world, rank = settings["num_shards"], settings["shard_index"]
        device = torch.device(settings["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        return ProcessLayout(rank, world, True, device, None)
    from accelerate import PartialState

    distributed_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    state = PartialState(backend="gloo") if distributed_cpu else PartialState()
    device = torch.device(settings["device"]) if settings["device"] else state.device
    barrier = state.wait_for_everyone if state.num_processes > 1 else None
    return ProcessLayout(state.process_index, state.num_processes, state.is_main_process, device, barrier)


def environment_info(layout: ProcessLayout) -> dict[str, Any]:
    """Versions, device and process count, for the summary."""
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


if __name__ == "__main__":
    commands = {"gsm8k": gsm8k_main, "humaneval_infill": infill_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: python -m flexretrofit.evaluation.cli {{{','.join(commands)}}} [options]")
    commands[sys.argv[1]](sys.argv[2:])
