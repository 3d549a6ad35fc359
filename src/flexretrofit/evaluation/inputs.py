"""Old import path of the run's data loading: each task loads and checks its own examples
(:meth:`flexretrofit.evaluation.tasks.Task.load`); GSM8K's hub-aware loader is in
:mod:`flexretrofit.evaluation.tasks.gsm8k`."""

from flexretrofit.evaluation.tasks.gsm8k import HUB_GSM8K_FAILED, load_gsm8k_examples

__all__ = ["HUB_GSM8K_FAILED", "load_gsm8k_examples"]
