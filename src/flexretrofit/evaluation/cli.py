"""Command line of the GSM8K and HumanEval-infilling evaluations (the ``eval/*.py`` scripts call it).

    python eval/gsm8k.py --model runs/instruct_gsm8k_8b/final --data gsm8k_test.jsonl --preset published
    python eval/humaneval_infill.py --model runs/instruct_infill_8b/final --variant single_line
    accelerate launch --num_processes 8 eval/gsm8k.py --model ... --data ...     # one shard per process

A thin layer over the harness (:func:`flexretrofit.evaluation.harness.run_benchmark`). Every input is
checked before the model is loaded, cheapest first: the settings (:mod:`.settings`, layered from
defaults, ``--preset``, ``--config`` YAML and flags), the checkpoint's config.json
(:mod:`.model_loading`), the data (the task's :meth:`~flexretrofit.evaluation.tasks.Task.load`), the
tokenizer and sampler config, and any results already in ``--output-dir``. A mistake ends the program with one line on stderr and exit code 2; results
that cannot be written (a full disk) end it with one line and exit code 1, and the rerun resumes.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flexretrofit.evaluation.generators import SamplerGenerator, generation_settings
from flexretrofit.evaluation.harness import (
    IncompleteResults,
    RunConfigMismatch,
    check_results_files,
    check_run_config,
    merge_and_report,
    run_benchmark,
)
from flexretrofit.evaluation.model_loading import check_model, load_eval_tokenizer, load_model
from flexretrofit.evaluation.processes import environment_info, process_layout
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
from flexretrofit.models import resolve_dtype
from flexretrofit.models.auto import needs_retrofit
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


if __name__ == "__main__":
    commands = {"gsm8k": gsm8k_main, "humaneval_infill": infill_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: python -m flexretrofit.evaluation.cli {{{','.join(commands)}}} [options]")
    commands[sys.argv[1]](sys.argv[2:])
