"""The task interface and the layout: every task declares its settings for every method, and the old
import paths name the same objects as the new ones."""

import pytest

from flexretrofit.data.formats import BOUNDARY_TOKEN
from flexretrofit.evaluation import stats
from flexretrofit.evaluation.tasks import TASKS, GSM8KTask, HumanEvalInfillTask, Task, task_class
from flexretrofit.evaluation.tasks.base import Option
from flexretrofit.evaluation.tasks.humaneval_infill import layout_marker_ids
from flexretrofit.methods import METHODS
from flexretrofit.testing import build_tiny_tokenizer


def test_each_task_declares_settings_for_every_method():
    assert TASKS == {"gsm8k": GSM8KTask, "humaneval_infill": HumanEvalInfillTask}
    for name, task in TASKS.items():
        assert issubclass(task, Task) and task.name == name and task_class(name) is task
        assert set(task.generation_defaults) == set(METHODS)
        for preset in task.presets.values():
            assert set(preset) == set(METHODS)
        assert task.title and task.reference_label
    assert (GSM8KTask.infilling, HumanEvalInfillTask.infilling) == (False, True)
    with pytest.raises(ValueError, match="unknown benchmark 'mbpp'"):
        task_class("mbpp")


def test_an_option_of_the_old_flex_scope_reads_as_flexmdm():
    assert Option("steps", None, "steps", scope="flex").scope == "flexmdm"
    method = Option("method", "flexmdm", "the method", spellings={"flex": "flexmdm"})
    assert method.read("flex") == "flexmdm" and method.read("mdm") == "mdm"


def test_layout_marker_ids_are_the_markers_around_the_gap():
    tokenizer = build_tiny_tokenizer()
    assert layout_marker_ids(tokenizer, "boundary") == [tokenizer.convert_tokens_to_ids(BOUNDARY_TOKEN)]
    assert layout_marker_ids(tokenizer, "plain") == []
    assert HumanEvalInfillTask.suppressed_token_ids({"layout": "plain"}, tokenizer) == []
    assert GSM8KTask.suppressed_token_ids({}, tokenizer) == []


def test_old_import_paths_name_the_moved_objects():
    from flexretrofit.evaluation import (
        benchmarks,
        cli,
        gsm8k,
        humaneval_infill,
        inputs,
        lengths,
        model_loading,
        options,
        processes,
        settings,
    )
    from flexretrofit.evaluation.tasks import gsm8k as gsm8k_task
    from flexretrofit.evaluation.tasks import humaneval_infill as infill_task

    assert gsm8k.extract_answer is gsm8k_task.extract_answer and gsm8k.load_gsm8k is gsm8k_task.load_gsm8k
    assert gsm8k.wilson_interval is stats.wilson_interval
    assert humaneval_infill.summarize_pass_at_k is stats.summarize_pass_at_k
    assert humaneval_infill.load_infill_tasks is infill_task.load_infill_tasks
    assert lengths.total_variation_distance is stats.total_variation_distance
    assert lengths.length_histogram is stats.length_histogram
    assert benchmarks.GSM8KBenchmark is GSM8KTask and benchmarks.InfillBenchmark is HumanEvalInfillTask
    assert benchmarks.Benchmark is Task
    assert options.PRESETS is settings.PRESETS and options.OPTIONS is settings.OPTIONS
    assert inputs.load_gsm8k_examples is gsm8k_task.load_gsm8k_examples
    assert model_loading.load_model is cli.load_model and processes.process_layout is cli.process_layout
