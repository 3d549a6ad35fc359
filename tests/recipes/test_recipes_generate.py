"""recipes/generate.py: generation from a FlexMDM or LLaDA folder; every mistake exits 2 with one line."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexretrofit.sampling import FlexGenerationConfig, MDMGenerationConfig, sampling_method
from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint, tiny_flexmdm

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "generate.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("generate_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flex_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flex")
    tokenizer = build_tiny_tokenizer()
    model = tiny_flexmdm(tokenizer, seed=0)
    model.generation_config = FlexGenerationConfig(steps=5, confidence="entropy", max_length=48)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory):
    return save_tiny_llada_checkpoint(tmp_path_factory.mktemp("ckpt") / "llada")


def test_generates_from_a_flexmdm_folder_with_config_overrides(flex_folder, capsys):
    load_recipe().main(
        [
            "--model",
            str(flex_folder),
            "--prompt",
            "maze 5x5",
            "--prompt",
            "def f(x):",
            "--steps",
            "8",
            "max_length=40",
            "confidence=prob_diff",
        ]
    )
    printed = capsys.readouterr().out
    assert printed.count("--- prompt:") == 2 and "'maze 5x5'" in printed
    lengths = [int(line.split()[1]) for line in printed.splitlines() if line.endswith(" tokens")]
    assert len(lengths) == 2 and all(0 <= n <= 40 for n in lengths)


def recording_recipe():
    """The recipe module with its sampling table wrapped: every config a sampler is called with lands in ``used``."""
    recipe, used = load_recipe(), []

    def recording_table(method, **kwargs):
        row = sampling_method(method, **kwargs)

        def recording_sampler(model, ids, mask, config, **overrides):
            used.append(config)
            return row.generate(model, ids, mask, config, **overrides)

        return dataclasses.replace(row, generate=recording_sampler)

    recipe.sampling_method = recording_table
    return recipe, used


def test_the_saved_generation_config_is_the_default(flex_folder, capsys):
    recipe, used = recording_recipe()
    recipe.main(["--model", str(flex_folder), "--prompt", "maze 5x5"])
    recipe.main(["--model", str(flex_folder), "--prompt", "maze 5x5", "--steps", "3", "max_length=30"])
    assert (used[0].steps, used[0].confidence, used[0].max_length) == (5, "entropy", 48)
    assert (used[1].steps, used[1].confidence, used[1].max_length) == (3, "entropy", 30)


def test_another_method_starts_from_its_own_defaults_not_the_saved_config(tmp_path, capsys):
    # A FlexMDM's saved generation_config.json belongs to its own sampler: --method mdm must not read the
    # fields both samplers have (steps, temperature, seed) as the MDM's, but start from the MDM defaults.
    tokenizer = build_tiny_tokenizer()
    model = tiny_flexmdm(tokenizer, seed=0)
    model.generation_config = FlexGenerationConfig(steps=200, temperature=0.7, seed=11)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    recipe, used = recording_recipe()
    recipe.main(
        [
            "--model",
            str(tmp_path),
            "--prompt",
            "hello",
            "--method",
            "mdm",
            "--steps",
            "8",
            "gen_length=8",
            "block_length=8",
        ]
    )
    defaults = MDMGenerationConfig()
    assert isinstance(used[0], MDMGenerationConfig)
    assert (used[0].temperature, used[0].seed) == (defaults.temperature, defaults.seed) != (0.7, 11)
    assert (used[0].steps, used[0].gen_length) == (8, 8)
    assert capsys.readouterr().out.rstrip().endswith("tokens")
    # Without --steps the saved steps=200 would have been refused (more steps than gen_length); now the
    # MDM's own default applies.
    recipe.main(["--model", str(tmp_path), "--prompt", "hello", "--method", "mdm"])
    assert used[1].steps == defaults.steps


def test_llada_folder_uses_the_mdm_sampler(llada_folder, capsys):
    load_recipe().main(
        ["--model", str(llada_folder), "--prompt", "hello", "--steps", "4", "gen_length=4", "block_length=4"]
    )
    printed = capsys.readouterr().out
    assert "--- prompt: 'hello'" in printed and printed.rstrip().endswith("--- 4 tokens")  # fixed length


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_recipe().main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def test_mistakes_exit_2_with_one_line(flex_folder, llada_folder, tmp_path, capsys):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases = {
        "does not exist": ["--model", str(tmp_path / "missing"), "--prompt", "x"],
        "has no config.json": ["--model", str(tmp_path), "--prompt", "x"],
        "holds a model of type 'bert'": ["--model", str(tmp_path / "bert"), "--prompt", "x"],
        "use --method mdm": ["--model", str(llada_folder), "--prompt", "x", "--sampler", "flex"],
        "use --method mdm, or retrofit": [
            "--model",
            str(llada_folder),
            "--prompt",
            "x",
            "--method",
            "flexmdm",
        ],
        "--method='flex-mdm' is not a method": [
            "--model",
            str(llada_folder),
            "--prompt",
            "x",
            "--method",
            "flex-mdm",
        ],
        "unknown generation option(s) ['no_such_field']": [
            "--model",
            str(llada_folder),
            "--prompt",
            "x",
            "no_such_field=1",
        ],
        "steps must be an integer >= 1": ["--model", str(flex_folder), "--prompt", "x", "--steps", "0"],
        "unknown confidence method": ["--model", str(flex_folder), "--prompt", "x", "confidence=margin"],
        "is not a key=value generation setting": ["--model", str(flex_folder), "--prompt", "x", "steps"],
        "argument --steps: invalid int value": [
            "--model",
            str(flex_folder),
            "--prompt",
            "x",
            "--steps",
            "many",
        ],
        "the following arguments are required: --prompt": ["--model", str(flex_folder)],
    }
    for expected, argv in cases.items():
        code, err = run_main(argv, capsys)
        assert code == 2, expected
        assert err.count("\n") == 1 and err.startswith("generate.py: error: ") and expected in err, err
    # A prompt the sampler refuses is found after loading (the loading progress bar comes first).
    argv = ["--model", str(flex_folder), "--prompt", "maze 5x5 " * 20, "max_length=8"]
    code, err = run_main(argv, capsys)
    last = err.rstrip("\n").split("\n")[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("generate.py: error: row 0 starts with") and "above the length cap" in last


def test_a_truncated_shard_exits_2_naming_the_file(tmp_path, capsys):
    folder = save_tiny_llada_checkpoint(tmp_path / "llada")
    shard = folder / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    code, err = run_main(
        ["--model", str(folder), "--prompt", "x", "--steps", "4", "gen_length=4", "block_length=4"], capsys
    )
    assert code == 2 and str(shard) in err and "incomplete or corrupt" in err and err.count("\n") == 1


def test_command_line_mistake_prints_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(RECIPE), "--model", str(tmp_path / "nowhere"), "--prompt", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "nowhere does not exist" in result.stderr


@pytest.fixture(scope="module")
def saved_mdm_folder(tmp_path_factory):
    folder = save_tiny_llada_checkpoint(tmp_path_factory.mktemp("saved") / "llada")
    MDMGenerationConfig(steps=4, gen_length=4, block_length=4).save_pretrained(folder)
    return folder


BAD_NUMBERS = [
    # (arguments after --model and --prompt, what the one line must say)
    (["temperature=nan"], "temperature must be >= 0 and finite (0 = argmax), got 'nan'"),
    (["temperature=abc"], "temperature must be >= 0 and finite (0 = argmax), got 'abc'"),
    (["temperature=.inf"], "temperature must be >= 0 and finite (0 = argmax), got inf"),
    (["temperature=-1"], "temperature must be >= 0 and finite (0 = argmax), got -1"),
    (["steps=0"], "steps must be an integer >= 1 and <= 100000, got 0"),
    (["steps=nan"], "steps must be an integer >= 1 and <= 100000, got 'nan'"),
    (["steps=1000000000"], "steps must be an integer >= 1 and <= 100000, got 1000000000"),
    (["--steps", "1000000000"], "steps must be an integer >= 1 and <= 100000, got 1000000000"),
    (["max_length=nan"], "max_length must be an integer >= 1, got 'nan'"),
    (["max_length=0"], "max_length must be an integer >= 1, got 0"),
    (["window_scale=.nan"], "window_scale must be > 0 and finite"),
    (["max_window=abc"], "max_window must be an integer >= 1, got 'abc'"),
    (["bucket_size=0"], "bucket_size must be an integer >= 1, got 0"),
    (["seed=1.5"], "seed must be an integer, got 1.5"),
]
BAD_MDM_NUMBERS = [
    (["cfg_scale=nan"], "cfg_scale must be >= 0 and finite (0 = no guidance), got 'nan'"),
    (["gen_length=abc"], "gen_length must be an integer >= 1, got 'abc'"),
    (["temperature=nan"], "temperature must be >= 0 and finite (0 = argmax), got 'nan'"),
    # the saved generation_config.json says gen_length=4: checked before the model loads
    (["--steps", "8"], "steps=8 is more than gen_length=4"),
]


def test_every_bad_number_exits_2_with_one_line_before_the_model_loads(flex_folder, saved_mdm_folder, capsys):
    recipe = load_recipe()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    recipe.load_pretrained = refuse
    cases = [(flex_folder, *case) for case in BAD_NUMBERS]
    cases += [(saved_mdm_folder, *case) for case in BAD_MDM_NUMBERS]
    for folder, extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            recipe.main(["--model", str(folder), "--prompt", "x", *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith("generate.py: error: ") and message in err, err
