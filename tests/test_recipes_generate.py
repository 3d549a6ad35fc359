"""recipes/generate.py: command-line generation from a FlexMDM or LLaDA folder."""

import importlib.util
from pathlib import Path

import pytest

from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint, tiny_flexmdm

REPO = Path(__file__).resolve().parents[1]


def load_recipe():
    spec = importlib.util.spec_from_file_location("generate_recipe", REPO / "recipes" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generates_from_a_flexmdm_folder_with_config_overrides(tmp_path, capsys):
    tokenizer = build_tiny_tokenizer()
    tiny_flexmdm(tokenizer, seed=0).save_pretrained(tmp_path / "flex")
    tokenizer.save_pretrained(tmp_path / "flex")
    load_recipe().main(
        [
            "--model",
            str(tmp_path / "flex"),
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


def test_llada_folder_uses_the_mdm_sampler_and_unknown_fields_fail(tmp_path, capsys):
    folder = save_tiny_llada_checkpoint(tmp_path / "llada")
    recipe = load_recipe()
    recipe.main(
        ["--model", str(folder), "--prompt", "hello", "--steps", "4", "gen_length=4", "block_length=4"]
    )
    printed = capsys.readouterr().out
    assert "--- prompt: 'hello'" in printed and printed.rstrip().endswith("--- 4 tokens")  # fixed length
    with pytest.raises(ValueError):
        recipe.main(["--model", str(folder), "--prompt", "hello", "no_such_field=1"])
