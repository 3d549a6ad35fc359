"""Test-wide settings: one intra-op thread per process; fixtures shared across test files.

The suite runs tiny models, where extra threads buy nothing, and several tests start subprocesses
(distributed training, sandboxed programs); a single thread per process keeps 2-core machines from
oversubscribing and the timings stable.
"""

import os
from typing import NamedTuple

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(root, data)``: a tiny LLaDA checkpoint in ``root / "llada"`` and the tiny data files (``data["corpus"]``
    ...), written once per test module (the training tests' common inputs)."""
    from flexretrofit.testing import save_tiny_llada_checkpoint
    from flexretrofit.testing_cli import write_tiny_data

    root = tmp_path_factory.mktemp("tiny")
    save_tiny_llada_checkpoint(root / "llada")
    return root, write_tiny_data(root / "data")


class CanonicalHumanEval(NamedTuple):
    tasks: list  # InfillTask: the first single-line infilling task of each HumanEval problem
    programs: list  # TestProgram: its canonical middle in place, i.e. the complete reference solution
    results: list  # SandboxResult of each program


@pytest.fixture(scope="session")
def canonical_humaneval():
    """The sandbox's verdicts on the canonical programs of the 164 HumanEval problems.

    Three tests judge exactly these programs (the sweep over every canonical single line, the standard-value
    variants, the honest control of the always-equal attack); the sandbox runs them once per session.
    """
    from flexretrofit.evaluation.humaneval_infill import check_completion, load_infill_tasks
    from flexretrofit.evaluation.sandbox import SandboxConfig, run_many

    first = {}
    for task in load_infill_tasks("single_line"):
        first.setdefault(task.problem_id, task)
    tasks = list(first.values())
    programs = [check_completion(task, task.canonical_middle) for task in tasks]
    # The most tolerant limit of the three tests: the slowest reference tests take seconds on a busy machine.
    results = run_many(programs, SandboxConfig(timeout_s=20.0), max_workers=2)
    return CanonicalHumanEval(tasks, programs, results)
