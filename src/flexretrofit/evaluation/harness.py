"""Sharded, resumable benchmark runs: items -> generator -> scored rows -> merged results -> report.

One run of a benchmark over ``output_dir``:

1. every process takes its slice of the items by index (``items[rank::world]``) and writes its rows to
   its own shard, ``shards/rank{r}-of-{w}.jsonl``, one row as soon as it is scored; rows already in any
   shard or in the merged file are skipped, so a rerun (with any number of processes) resumes;
2. once every row exists, one process merges the shards into ``samples.jsonl`` (ordered by item
   index) and writes ``summary.json`` and ``lengths.png`` (generated vs reference lengths).

``run_config.json`` pins what the rows depend on (model, sampler settings, prompts, seed); a rerun
with other settings into the same folder is refused instead of mixing two runs' rows.

A task (:class:`flexretrofit.evaluation.tasks.Task`: ``GSM8KTask``, ``HumanEvalInfillTask``) owns its
items, its prompts and how a generation is scored; the harness knows none of that. Prompts the model
cannot take (longer than the sampler's limit) get a row with ``skipped = "prompt_too_long"`` that counts as wrong.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flexretrofit.evaluation.lengths import length_stats, plot_length_distributions
from flexretrofit.evaluation.results import (
    ResultsFileError,
    ResultsWriteError,
    ResultsWriter,
    read_results,
    write_summary,
    write_text_atomic,
)
from flexretrofit.evaluation.runner import GenerateFn, Generation, run_resumable
from flexretrofit.evaluation.stats import total_variation_distance
from flexretrofit.evaluation.tasks.base import EvalItem
from flexretrofit.evaluation.tasks.base import Task as Benchmark
from flexretrofit.methods import method_name
from flexretrofit.utils import check_rank

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "lengths.png"
RUN_CONFIG_FILE = "run_config.json"
SHARD_DIR = "shards"
SKIPPED_TOO_LONG = "prompt_too_long"


# ------------------------------------------------------------------------------------------------
# running one shard
# ------------------------------------------------------------------------------------------------
def shard_path(output_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(output_dir) / SHARD_DIR / f"rank{rank:03d}-of-{world_size:03d}.jsonl"


def shard_items(items: Sequence[EvalItem], rank: int, world_size: int) -> list[EvalItem]:
    """The items of process ``rank`` of ``world_size``: every ``world_size``-th by index."""
    check_rank(rank, world_size)
    return [item for item in items if item.index % world_size == rank]


def run_shard(
    benchmark: Benchmark,
    generate: GenerateFn,
    output_dir: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    progress: bool = True,
) -> int:
    """Generate and score this process's items that have no row yet; return how many rows it wrote.

    Items are generated longest prompt first (less padding per batch; a too-small memory budget shows
    at once). Each row gets ``id``, ``index``, ``prompt_tokens`` and ``generation_s``: its share of its
    batch's generation time (scoring excluded), from which the summary computes throughput.
    """
    own_path = shard_path(output_dir, rank, world_size)
    done = {row_id for path in _result_files(output_dir) if path != own_path for row_id in _ids(path)}
    mine = [item for item in shard_items(benchmark.items, rank, world_size) if item.id not in done]
    limit = math.inf if max_prompt_tokens is None else max_prompt_tokens
    too_long = [item for item in mine if item.prompt.num_tokens > limit]
    runnable = sorted(
        (item for item in mine if item.prompt.num_tokens <= limit),
        key=lambda item: (-item.prompt.num_tokens, item.index),
    )
    batch_seconds = [0.0]  # generation time of the batch being scored

    def timed_generate(items: list[EvalItem]) -> list[Generation | str]:
        start = time.perf_counter()
        outputs = list(generate([item.prompt for item in items]))
        batch_seconds[0] = time.perf_counter() - start
        return outputs

    def score(positions: list[int], generations: list[Generation]) -> list[dict[str, Any]]:
        items = [runnable[position] for position in positions]
        share = round(batch_seconds[0] / len(items), 6)
        rows = benchmark.score(items, generations)
        return [_with_bookkeeping(row, item, share) for row, item in zip(rows, items)]

    with ResultsWriter(own_path) as writer:
        written_before = len(writer)
        new_too_long = [item for item in too_long if item.id not in writer]
        if new_too_long:
            logger.warning(
                "%d prompts are longer than the sampler's limit of %s tokens (first: %s); their rows are "
                "recorded as wrong with skipped=%r",
                len(new_too_long),
                limit,
                new_too_long[0].id,
                SKIPPED_TOO_LONG,
            )
        for item in new_too_long:
            row = _with_bookkeeping(benchmark.skipped_row(item, SKIPPED_TOO_LONG), item, 0.0)
            writer.write({"id": item.id, **row})
        already = sum(item.id in writer for item in runnable)
        bar = _progress_bar(len(runnable), already, benchmark.name, rank, world_size, progress)
        try:
            run_resumable(
                [item.id for item in runnable],
                runnable,
                timed_generate,
                score,
                writer,
                batch_size=batch_size,
                on_batch=None if bar is None else lambda finished, _total: bar.update(finished - bar.n),
            )
        finally:
            if bar is not None:
                bar.close()
        return len(writer) - written_before


def _with_bookkeeping(row: Mapping[str, Any], item: EvalItem, generation_s: float) -> dict[str, Any]:
    return {
        "index": item.index,
        **row,
        "prompt_tokens": item.prompt.num_tokens,
        "generation_s": generation_s,
        "skipped": row.get("skipped"),
    }


def _progress_bar(total: int, initial: int, name: str, rank: int, world_size: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    label = name if world_size == 1 else f"{name} [{rank + 1}/{world_size}]"
    return tqdm(total=total, initial=initial, desc=label, unit="ex", position=rank, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# merging and reporting
# ------------------------------------------------------------------------------------------------
def _result_files(output_dir: str | os.PathLike) -> list[Path]:
    output_dir = Path(output_dir)
    merged = output_dir / SAMPLES_FILE
    shards = sorted((output_dir / SHARD_DIR).glob("*.jsonl"))
    return ([merged] if merged.exists() else []) + shards


def _ids(path: Path) -> list[str]:
    return [row["id"] for row in read_results(path) if "id" in row]


def collect_rows(output_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every row in the merged file and the shards, by id (the first copy of an id wins)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in _result_files(output_dir):
        for row in read_results(path):
            rows.setdefault(row["id"], row)
    return rows


def merge_results(output_dir: str | os.PathLike, benchmark: Benchmark) -> list[dict[str, Any]] | None:
    """Write ``samples.jsonl`` with every row found (ordered by index) and return the benchmark's rows
    in item order, or None while some item has no row yet (another shard is still running)."""
    found = collect_rows(output_dir)
    missing = [item.id for item in benchmark.items if item.id not in found]
    ordered = sorted(found.values(), key=lambda row: (row.get("index", math.inf), str(row["id"])))
    _write_jsonl_atomic(Path(output_dir) / SAMPLES_FILE, ordered)
    if missing:
        logger.info(
            "%d of %d rows are still missing (first: %s)", len(missing), len(benchmark.items), missing[0]
        )
        return None
    return [found[item.id] for item in benchmark.items]


def _write_jsonl_atomic(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(dict(row), ensure_ascii=True) + "\n" for row in rows))


def build_summary(
    benchmark: Benchmark, rows: list[dict[str, Any]], run_info: Mapping[str, Any]
) -> dict[str, Any]:
    """Metrics, length statistics against the references, throughput, and ``run_info`` (settings)."""
    skipped = [row for row in rows if row.get("skipped")]
    generated = [row for row in rows if not row.get("skipped")]
    lengths = [row["num_tokens"] for row in generated if row.get("num_tokens") is not None]
    references = [item.reference_tokens for item in benchmark.items]
    summary: dict[str, Any] = {"benchmark": benchmark.name, **benchmark.metrics(rows)}
    summary["num_rows"] = len(rows)
    summary["skipped"] = {SKIPPED_TOO_LONG: sum(row["skipped"] == SKIPPED_TOO_LONG for row in skipped)}
    summary["reference_length"] = length_stats(references).to_dict()
    if lengths:
        summary["generated_length"] = length_stats(lengths).to_dict()
        summary["length_tv_distance"] = total_variation_distance(lengths, references)
    seconds = sum(float(row.get("generation_s") or 0.0) for row in generated)
    summary["throughput"] = {
        "generation_seconds": round(seconds, 4),
        "examples_per_second": len(generated) / seconds if seconds > 0 else None,
        "tokens_per_second": sum(lengths) / seconds if seconds > 0 else None,
        "note": "sampler time only (no loading or scoring), summed over processes: per-process rates",
    }
    summary.update(run_info)
    return summary


def write_report(
    output_dir: str | os.PathLike,
    benchmark: Benchmark,
    rows: list[dict[str, Any]],
    run_info: Mapping[str, Any],
) -> dict[str, Any]:
    """``summary.json`` and, when any row was generated, ``lengths.png``; returns the summary."""
    output_dir = Path(output_dir)
    summary = build_summary(benchmark, rows, run_info)
    lengths = [
        row["num_tokens"] for row in rows if not row.get("skipped") and row.get("num_tokens") is not None
    ]
    if lengths:
        try:
            plot_length_distributions(
                lengths,
                [item.reference_tokens for item in benchmark.items],
                output_dir / PLOT_FILE,
                title=f"{benchmark.name}: generated length",
                labels=("generated", benchmark.reference_label),
            )
        except OSError as error:
            raise ResultsWriteError(output_dir / PLOT_FILE, error) from error
        summary["files"] = {"samples": SAMPLES_FILE, "plot": PLOT_FILE}
    else:
        summary["files"] = {"samples": SAMPLES_FILE, "plot": None}
    write_summary(output_dir / SUMMARY_FILE, summary)
    return summary


class RunConfigMismatch(ValueError):
    """The output folder holds rows produced with other settings."""


def check_run_config(
    output_dir: str | os.PathLike,
    fingerprint: Mapping[str, Any],
    *,
    write: bool = True,
    only_given: bool = False,
) -> None:
    """Refuse to add rows to a folder whose rows came from other settings; record them on first use.

    ``only_given``: compare only the settings in ``fingerprint`` (an early check, before everything the
    full fingerprint holds is known; it never writes).

    Raises:
        RunConfigMismatch: naming the settings that differ (nested ones as ``sampler.steps``).
    """
    path = Path(output_dir) / RUN_CONFIG_FILE
    try:  # JSON-normalised (tuples -> lists); NaN would never compare equal, so no rerun could resume
        current = json.loads(json.dumps(dict(fingerprint), allow_nan=False))
    except ValueError as error:
        raise ValueError(f"the run settings must be finite numbers to be recorded: {error}") from None
    if path.exists():
        stored = _flatten(read_run_config(output_dir))
        flat = _flatten(current)
        keys = set(flat) if only_given else set(stored) | set(flat)
        differ = sorted(key for key in keys if stored.get(key) != flat.get(key))
        if differ:
            details = "; ".join(f"{key}: {stored.get(key)!r} -> {flat.get(key)!r}" for key in differ)
            raise RunConfigMismatch(
                f"{output_dir} holds results of a run with other settings ({details}). Its rows would mix "
                "with this run's: pass another --output-dir, or delete that folder to start over."
            )
    elif write and not only_given:
        write_summary(path, current)


def read_run_config(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The settings recorded in ``output_dir/run_config.json``.

    Raises:
        RunConfigMismatch: the file is not a JSON object (damaged: its rows cannot be trusted to match).
    """
    path = Path(output_dir) / RUN_CONFIG_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        stored = error
    if not isinstance(stored, dict):
        raise RunConfigMismatch(
            f"{path} is damaged (not a JSON object), so the rows next to it cannot be matched to settings: "
            "pass another --output-dir, or delete that folder to start over"
        )
    return _current_spellings(stored)


def _current_spellings(stored: dict[str, Any]) -> dict[str, Any]:
    """A run config as this version writes it: folders written before the method vocabulary record the
    sampler as ``"sampler": {"sampler": "flex", ...}``, now ``"sampler": {"method": "flexmdm", ...}``."""
    sampler = stored.get("sampler")
    if not isinstance(sampler, dict) or "sampler" not in sampler:
        return stored
    try:
        method = method_name(sampler["sampler"], key="sampler")
    except ValueError:  # not a method at all: left as it is, so the mismatch is reported
        return stored
    renamed = {"method": method, **{key: value for key, value in sampler.items() if key != "sampler"}}
    return {**stored, "sampler": renamed}


def check_results_files(output_dir: str | os.PathLike) -> int:
    """Read every results file of ``output_dir`` (merged rows and shards) and return how many rows they
    hold; run before loading a model so that a damaged file fails at once, not after the first batch.

    Raises:
        ResultsFileError: a file damaged anywhere but its last line, or a row without an ``id``.
        RunConfigMismatch: a damaged ``run_config.json``.
    """
    if (Path(output_dir) / RUN_CONFIG_FILE).exists():
        read_run_config(output_dir)
    count = 0
    for path in _result_files(output_dir):
        for number, row in enumerate(read_results(path), start=1):
            if "id" not in row:
                raise ResultsFileError(
                    f"{path}: row {number} has no 'id' field; is this a results folder of this evaluation?"
                )
            count += 1
    return count


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_benchmark(
    benchmark: Benchmark,
    generate: GenerateFn,
    output_dir: str | os.PathLike,
    *,
    run_info: Mapping[str, Any] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    progress: bool = True,
    is_merger: bool = True,
    barrier: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Run this process's shard, then (``is_merger``) merge and report once every row exists.

    ``barrier``: called after the shard (all processes), e.g. Accelerate's ``wait_for_everyone``; without
    one (independent shard jobs) whichever shard finds every row present writes the report.
    Returns the summary, or None when this process did not write one.
    """
    if fingerprint is not None:
        check_run_config(output_dir, fingerprint, write=is_merger or barrier is None)
    start = time.perf_counter()
    written = run_shard(
        benchmark,
        generate,
        output_dir,
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        max_prompt_tokens=max_prompt_tokens,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    if barrier is not None:
        barrier()
    if not is_merger:
        return None
    return merge_and_report(
        output_dir,
        benchmark,
        {
            **(run_info or {}),
            "this_run": {"rows_written_by_this_process": written, "wall_clock_s": round(elapsed, 3)},
        },
    )


class IncompleteResults(ValueError):
    """A merge was asked for, but some items have no row yet (a shard has not run or not finished)."""


def merge_and_report(
    output_dir: str | os.PathLike,
    benchmark: Benchmark,
    run_info: Mapping[str, Any] | None = None,
    *,
    require_complete: bool = False,
) -> dict[str, Any] | None:
    """Merge the shards; when every row exists write the summary and plot and return the summary.

    Raises:
        IncompleteResults: ``require_complete`` (``--merge-only``) and some item has no row; nothing is
            written, and the message names the shards that lack rows.
    """
    if require_complete:
        found = collect_rows(output_dir)
        missing = [item for item in benchmark.items if item.id not in found]
        if missing:
            raise IncompleteResults(describe_missing(output_dir, benchmark, missing))
    rows = merge_results(output_dir, benchmark)
    if rows is None:
        logger.warning(
            "%s: not every row exists yet (other shards still running?); the last shard to finish, or a "
            "rerun with --merge-only, writes the summary",
            output_dir,
        )
        return None
    return write_report(output_dir, benchmark, rows, run_info or {})


_SHARD_NAME = re.compile(r"rank(\d+)-of-(\d+)\.jsonl")


def describe_missing(output_dir: str | os.PathLike, benchmark: Benchmark, missing: Sequence[EvalItem]) -> str:
    """One line: how many rows are missing, which shard files should hold them, and what to run."""
    output_dir = Path(output_dir)
    total = len(benchmark.items)
    rerun = "rerun the same command without --merge-only (it generates only the missing rows), then merge"
    if not _result_files(output_dir):
        return f"{output_dir} holds no results yet ({total} rows missing); {rerun}"
    worlds = sorted(
        {int(match[2]) for path in _result_files(output_dir) if (match := _SHARD_NAME.fullmatch(path.name))}
    )
    expected: dict[Path, int] = {}  # shard file -> how many of its items have no row
    for world in worlds:
        for item in missing:
            path = shard_path(output_dir, item.index % world, world)
            expected[path] = expected.get(path, 0) + 1
    shards = ", ".join(
        f"{path.relative_to(output_dir)} ({'no file' if not path.exists() else f'{count} rows missing'})"
        for path, count in sorted(expected.items())
    )
    where = f" in shard(s) {shards}" if shards else ""
    return (
        f"{output_dir}: {len(missing)} of {total} rows are missing{where} (first: {missing[0].id}), so no "
        f"summary was written; {rerun}"
    )
