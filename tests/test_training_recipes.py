"""The recipes end to end on the tiny CPU configs (what `make smoke-retrofit smoke-instruct` runs)."""

import runpy
from pathlib import Path

import pytest
import torch
import yaml

from flexretrofit.models import FlexMDMForMaskedDiffusion
from flexretrofit.testing import save_tiny_llada_checkpoint
from flexretrofit.testing_cli import write_tiny_data
from flexretrofit.training import ConfigError, read_log

REPO = Path(__file__).resolve().parents[1]
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
