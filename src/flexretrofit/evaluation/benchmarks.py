"""Old import path of the harness's task classes: the interface is now
:class:`flexretrofit.evaluation.tasks.Task` (``Benchmark`` here), each task in its own module of
:mod:`flexretrofit.evaluation.tasks`."""

from flexretrofit.evaluation.tasks.base import EvalItem
from flexretrofit.evaluation.tasks.base import Task as Benchmark
from flexretrofit.evaluation.tasks.gsm8k import GSM8KTask as GSM8KBenchmark
from flexretrofit.evaluation.tasks.humaneval_infill import HumanEvalInfillTask as InfillBenchmark

__all__ = ["Benchmark", "EvalItem", "GSM8KBenchmark", "InfillBenchmark"]
