"""The recipes end to end on the tiny CPU configs (what `make smoke-retrofit smoke-instruct` runs)."""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from flexretrofit.models import FlexMDMForMaskedDiffusion
from flexretrofit.testing import save_tiny_llada_checkpoint
from flexretrofit.testing_cli import write_tiny_data
from flexretrofit.training import ConfigError, read_log
from flexretrofit.training.cli import run_recipe as run_as_script

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"


def run_recipe(name: str, config: Path, *overrides: str) -> None:
    runpy.run_path(str(REPO / "recipes" / name))["main"](["--config", str(config), *overrides])


def tiny_yaml(tmp: Path, name: str, init_from: Path, sources: dict, out: Path) -> Path:
    values = yaml.safe_load((CONFIGS / name).read_text())
    values["model"]["init_from"] = str(init_from)
    values["data"].update({key: [{"path": str(path)}] for key, path in sources.items()})
    values["train"]["output_dir"] = str(out)
    path = tmp / name
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def retrofit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipes")
    save_tiny_llada_checkpoint(tmp / "llada")
    data = write_tiny_data(tmp / "data")
    config = tiny_yaml(
        tmp, "tiny_retrofit_cpu.yaml", tmp / "llada", {"sources": data["corpus"]}, tmp / "retrofit"
    )
    run_recipe("retrofit_llada.py", config)
    return tmp, data


def test_retrofit_recipe_trains_and_exports(retrofit):
    tmp, _ = retrofit
    losses = [r["loss"] for r in read_log(tmp / "retrofit" / "log.jsonl", "train")]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    model = FlexMDMForMaskedDiffusion.from_pretrained(tmp / "retrofit" / "final")
    assert model.config.insertion_schedule["name"] == "geometric"
    assert model.adaln.groups[0].weight.abs().max() > 0  # trained away from its zero init


@pytest.mark.parametrize(
    "config_name, source",
    [("tiny_instruct_gsm8k_cpu.yaml", "gsm8k"), ("tiny_instruct_infill_cpu.yaml", "infill")],
)
def test_instruct_recipe_tunes_the_retrofit(retrofit, config_name, source):
    tmp, data = retrofit
    sources = {"sources": data[source]}
    if source == "gsm8k":
        sources["eval_sources"] = data["gsm8k_eval"]
    out = tmp / config_name.removesuffix(".yaml")
    config = tiny_yaml(tmp, config_name, tmp / "retrofit" / "final", sources, out)
    run_recipe("instruct.py", config)
    assert [r["step"] for r in read_log(out / "log.jsonl", "train")] == [1, 2, 3, 4]
    assert len(read_log(out / "log.jsonl", "eval")) == 2
    tuned = FlexMDMForMaskedDiffusion.from_pretrained(out / "final")
    start = FlexMDMForMaskedDiffusion.from_pretrained(tmp / "retrofit" / "final")
    assert not torch.equal(tuned.insertion_head.proj.weight, start.insertion_head.proj.weight)


def test_recipes_refuse_the_other_recipes_data(retrofit, tmp_path):
    tmp, data = retrofit
    config = tiny_yaml(
        tmp, "tiny_retrofit_cpu.yaml", tmp / "llada", {"sources": data["corpus"]}, tmp_path / "x"
    )
    with pytest.raises(ConfigError, match="use retrofit_llada.py"):
        run_recipe("instruct.py", config)
    with pytest.raises(ConfigError, match="use instruct.py"):
        run_recipe("retrofit_llada.py", config, "model.kind=mdm")


# -- mistakes: one line on stderr, exit status 2 ---------------------------------------------------

MISTAKES = [
    ("retrofit_llada.py", ["optim.learning_rate=1e-4"], r"unknown config key optim.'learning_rate'"),
    ("retrofit_llada.py", ["train.mixed_precision=fp8"], r"train.mixed_precision='fp8' is not one of"),
    ("retrofit_llada.py", ["model.kind=mdm"], r"use instruct.py"),
    (
        "retrofit_llada.py",
        ["data.sources=[{path: missing.jsonl}]"],
        r"dataset file\(s\) not found: missing.jsonl",
    ),
    ("retrofit_llada.py", ["lora.targets=[q_proj, o_proj]"], r"unknown LoRA target\(s\) \['o_proj'\]"),
    ("retrofit_llada.py", ["train.global_batch_size=6"], r"global_batch_size=6 is not divisible"),
    ("retrofit_llada.py", ["train.output_dir=<nonempty>"], r"is not empty .*train.resume_from=latest"),
    ("instruct.py", [], r"instruct.py tunes on instruction data"),
    ("instruct.py", ["train.max_steps=0"], r"use retrofit_llada.py|train.max_steps must be >= 1"),
    ("instruct.py", ["optim.lr: 1"], r"must look like section.key=value"),
]


@pytest.mark.parametrize("recipe, overrides, message", MISTAKES)
def test_a_mistake_is_one_line_and_exit_status_2(retrofit, tmp_path, capsys, recipe, overrides, message):
    tmp, data = retrofit
    config = tiny_yaml(
        tmp_path, "tiny_retrofit_cpu.yaml", tmp / "llada", {"sources": data["corpus"]}, tmp_path / "o"
    )
    if "train.output_dir=<nonempty>" in overrides:
        overrides = [f"train.output_dir={tmp / 'retrofit'}"]  # holds the finished retrofit
    main = runpy.run_path(str(REPO / "recipes" / recipe))["main"]
    assert run_as_script(main, ["--config", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing was written


@pytest.mark.parametrize(
    "recipe, args, message",
    [
        ("retrofit_llada.py", ["--config", "missing.yaml"], "config file missing.yaml does not exist"),
        ("instruct.py", ["--config", str(CONFIGS / "tiny_retrofit_cpu.yaml")], "use retrofit_llada.py"),
        ("demo_maze.py", ["--config", "missing.yaml"], "demo config missing.yaml does not exist"),
    ],
)
def test_the_recipe_scripts_exit_2_without_a_traceback(tmp_path, recipe, args, message):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / recipe), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_gsm8k_record_without_its_answer_is_one_line_naming_file_and_line(retrofit, tmp_path, capsys):
    tmp, data = retrofit
    records = [json.loads(line) for line in data["gsm8k"].read_text().splitlines()]
    del records[2]["answer"]
    broken = tmp_path / "gsm8k.jsonl"
    broken.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tiny_yaml(
        tmp_path,
        "tiny_instruct_gsm8k_cpu.yaml",
        tmp / "retrofit" / "final",
        {"sources": broken, "eval_sources": data["gsm8k_eval"]},
        tmp_path / "o",
    )
    main = runpy.run_path(str(REPO / "recipes" / "instruct.py"))["main"]
    assert run_as_script(main, ["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"error: data file {broken} line 3: the record's 'answer' is missing; fix the record, or name the field "
        "this data uses in data.format_kwargs."
    )
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_the_maze_demo_refuses_a_work_dir_under_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    main = runpy.run_path(str(REPO / "recipes" / "demo_maze.py"))["main"]
    for args in (["--quick"], ["pretrain", "--quick", "--output-dir", str(tmp_path / "mdm")]):
        assert run_as_script(main, [*args, "--work-dir", str(tmp_path / "a_file" / "work")]) == 2
        assert capsys.readouterr().err == (
            f"error: --work-dir={tmp_path / 'a_file' / 'work'} cannot be created: {tmp_path / 'a_file'} is a "
            "file, not a folder; choose another --work-dir.\n"
        )
