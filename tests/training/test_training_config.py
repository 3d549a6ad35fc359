"""Training config: YAML + overrides, unknown keys, batch layout, and bad input caught before any training."""

import importlib.util
import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from flexretrofit.training import lora_check
from flexretrofit.training.cli import run_recipe
from flexretrofit.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    parse_overrides,
)
from flexretrofit.training.validation import batch_layout, model_length_limit, validate_config

REPO = Path(__file__).resolve().parents[2]
TINY_RETROFIT = REPO / "recipes" / "configs" / "tiny_retrofit_cpu.yaml"


def tiny_values(tiny, out_dir) -> dict:
    root, data = tiny
    values = yaml.safe_load(TINY_RETROFIT.read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["corpus"])}]
    values["train"]["output_dir"] = str(out_dir)
    return values


def test_every_shipped_config_loads():
    configs = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        config = load_config(path)
        assert config.model.kind in ("flexmdm", "mdm")


def test_accelerate_configs_leave_the_batch_layout_to_the_recipe_config():
    configs = {
        p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "recipes" / "accelerate").glob("*.yaml")
    }
    assert set(configs) == {"zero3_2x8", "zero3_1x8", "zero2_2x8", "single_gpu", "zero3_cpu_2proc"}
    assert (configs["zero2_2x8"]["num_machines"], configs["zero2_2x8"]["num_processes"]) == (2, 16)
    assert (configs["zero3_2x8"]["num_machines"], configs["zero3_2x8"]["num_processes"]) == (2, 16)
    assert configs["zero3_1x8"]["num_processes"] == 8 and configs["single_gpu"]["num_processes"] == 1
    for name, values in configs.items():
        deepspeed = values.get("deepspeed_config", {})
        assert "gradient_accumulation_steps" not in deepspeed and "gradient_clipping" not in deepspeed, name
        if values["distributed_type"] == "DEEPSPEED":
            assert deepspeed["zero_stage"] == int(name[4]), name  # zero2_* / zero3_*
            if deepspeed["zero_stage"] == 3:
                assert deepspeed["zero3_save_16bit_model"] is True, name


def test_published_retrofit_config_matches_the_paper():
    config = load_config(REPO / "recipes" / "configs" / "retrofit_llada_8b.yaml")
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (128, 128, 0.1)
    assert config.lora.targets == "published"
    assert (config.optim.lr, config.optim.warmup_ratio, config.optim.max_grad_norm) == (1e-4, 0.05, 1.0)
    assert config.train.global_batch_size == 128 and config.data.max_length == 1024
    assert config.train.max_steps == 200_000 and config.train.mixed_precision == "bf16"
    assert config.model.flex_config["insertion_schedule"] == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert config.model.flex_config["unmask_schedule"] == {"name": "linear"}


@pytest.mark.parametrize(
    "name, balance",
    [
        ("retrofit_llada_8b.yaml", "tokens"),
        ("instruct_gsm8k_8b.yaml", "tokens"),
        ("instruct_infill_8b.yaml", "tokens"),
        ("instruct_gsm8k_mdm_8b.yaml", "none"),  # a fixed canvas: every row is as wide, nothing to balance
        ("tiny_retrofit_cpu.yaml", "none"),
    ],
)
def test_the_8b_flexmdm_configs_balance_their_micro_batches(name, balance):
    assert load_config(REPO / "recipes" / "configs" / name).data.balance == balance


def test_overrides_are_parsed_as_yaml_and_merged():
    nested = parse_overrides(["train.max_steps=10", "lora.enabled=false", "optim.betas=[0.9, 0.95]"])
    assert nested == {"train": {"max_steps": 10}, "lora": {"enabled": False}, "optim": {"betas": [0.9, 0.95]}}
    config = load_config(TINY_RETROFIT, ["train.max_steps=10", "optim.lr=3e-4", "data.max_length=32"])
    assert config.train.max_steps == 10 and config.optim.lr == 3e-4 and config.data.max_length == 32
    assert config.lora.r == 8  # untouched keys keep the file's values
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["max_steps"])


@pytest.mark.parametrize(
    "values, named, allowed",
    [
        ({"trian": {}}, "'trian'", "model, lora, data"),
        ({"train": {"max_step": 3}}, "train.'max_step'", "max_steps"),
        ({"data": {"sources": [{"paht": "x.jsonl"}]}}, "data.sources[0].'paht'", "path, hub"),
    ],
)
def test_unknown_keys_are_named_with_the_allowed_ones(values, named, allowed):
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    message = str(error.value)
    assert f"unknown config key {named}" in message
    assert allowed in message


def test_values_are_type_checked():
    assert config_from_dict({"optim": {"lr": "3e-4"}}).optim.lr == 3e-4  # YAML 1.1 reads 3e-4 as a string
    assert config_from_dict({"lora": {"targets": ["q_proj", "lm_head"]}}).lora.targets == [
        "q_proj",
        "lm_head",
    ]
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML: no -> false
    with pytest.raises(ConfigError, match=r"train.max_steps='ten' has the wrong type; expected int"):
        config_from_dict({"train": {"max_steps": "ten"}})
    with pytest.raises(ConfigError, match=r"lora.enabled=1 has the wrong type; expected bool"):
        config_from_dict({"lora": {"enabled": 1}})


def test_values_outside_their_choices_are_rejected():
    with pytest.raises(ConfigError, match=r"model.kind='gpt' is not one of \['flexmdm', 'mdm'\]"):
        config_from_dict({"model": {"kind": "gpt"}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config("no/such/config.yaml")
    with pytest.raises(ConfigError, match="train.insertion_loss_weighting='ones' is not one of"):
        config_from_dict({"train": {"insertion_loss_weighting": "ones"}})
    assert (
        config_from_dict({"train": {"insertion_loss_weighting": "constant"}}).train.insertion_loss_weighting
        == "constant"
    )


def test_batch_layout_derives_accumulation_and_rejects_uneven_splits():
    assert batch_layout(TrainConfig(global_batch_size=128, micro_batch_size=4), 16) == (4, 2)
    assert batch_layout(
        TrainConfig(global_batch_size=8, micro_batch_size=2, gradient_accumulation_steps=2), 2
    ) == (2, 2)
    with pytest.raises(ConfigError, match=r"global_batch_size=10 is not divisible by .* = 4 x 2 = 8"):
        batch_layout(TrainConfig(global_batch_size=10, micro_batch_size=4), 2)
    with pytest.raises(
        ConfigError, match=r"is not micro_batch_size x processes x gradient_accumulation_steps"
    ):
        batch_layout(TrainConfig(global_batch_size=8, micro_batch_size=2, gradient_accumulation_steps=3), 1)


def test_model_length_limit_reads_the_checkpoint_config(tiny):
    root, _ = tiny
    base = config_from_dict({"model": {"init_from": str(root / "llada")}}).model
    assert model_length_limit(base) == 511  # 512 positions, one kept for the slot
    base.kind = "mdm"
    assert model_length_limit(base) == 512


BAD_INPUTS = [
    ({"data.sources": [{"path": "missing/corpus.jsonl"}]}, FileNotFoundError, r"missing/corpus.jsonl"),
    ({"data.max_length": 512}, ConfigError, r"data.max_length=512 is above the model's limit of 511"),
    ({"train.global_batch_size": 6}, ConfigError, r"global_batch_size=6 is not divisible"),
    ({"train.resume_from": "missing/checkpoint"}, FileNotFoundError, r"resume_from=missing/checkpoint"),
    (
        {"lora.targets": ["q_proj", "o_proj"]},
        ConfigError,
        r"lora.targets=.*unknown LoRA target\(s\) \['o_proj'\]",
    ),
    ({"lora.targets": "everything"}, ConfigError, r"unknown LoRA preset 'everything'"),
    (
        {"lora.enabled": False, "export.lora": "adapter"},
        ConfigError,
        r"export.lora=adapter .*lora.enabled=true",
    ),
    (
        {"model.flex_config": {"modulation_group_size": 0}},
        ConfigError,
        r"model.flex_config=.*modulation_group_size",
    ),
]


@pytest.mark.parametrize("change, error, message", BAD_INPUTS)
def test_bad_input_fails_before_any_training(tiny, tmp_path, change, error, message):
    values = tiny_values(tiny, tmp_path / "run")
    for dotted, value in change.items():
        section, key = dotted.split(".")
        values[section][key] = value
    config = config_from_dict(values)
    with pytest.raises(error, match=message):
        validate_config(config, world_size=1)
    # The recipe fails the same way and leaves nothing behind: no log, no checkpoint.
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(values))
    recipe = runpy.run_path(str(REPO / "recipes" / "retrofit_llada.py"))
    with pytest.raises(error, match=message):
        recipe["main"](["--config", str(config_file)])
    assert not (tmp_path / "run").exists()


def test_unknown_override_key_fails_in_the_recipe(tmp_path):
    recipe = runpy.run_path(str(REPO / "recipes" / "retrofit_llada.py"))
    with pytest.raises(
        ConfigError, match=r"unknown config key optim.'learning_rate'.*allowed keys in optim: lr"
    ):
        recipe["main"](["--config", str(TINY_RETROFIT), "optim.learning_rate=1e-4"])


def test_valid_tiny_config_passes(tiny, tmp_path):
    config = config_from_dict(tiny_values(tiny, tmp_path / "run"))
    assert validate_config(config, world_size=1) == (4, 2)
    assert validate_config(config, world_size=2) == (4, 1)


def test_lora_targets_are_checked_from_the_config_alone(tiny, tmp_path, monkeypatch):
    """No weights are read: a folder with only config.json is enough to find a bad target."""
    root, _ = tiny
    bare = tmp_path / "config_only"
    bare.mkdir()
    shutil.copy(root / "llada" / "config.json", bare / "config.json")
    values = tiny_values(tiny, tmp_path / "run")
    values["model"]["init_from"] = str(bare)
    validate_config(config_from_dict(values), world_size=1)  # the published targets all exist
    names = lora_check.module_names(config_from_dict(values).model)
    assert (
        "backbone.model.transformer.blocks.0.q_proj" in names and "backbone.model.transformer.ff_out" in names
    )
    values["model"]["kind"] = "mdm"
    assert "model.transformer.blocks.1.k_proj" in lora_check.module_names(config_from_dict(values).model)
    # An architecture without an LM head module: the lm_head group matches nothing.
    monkeypatch.setattr(
        lora_check, "module_names", lambda model: [n for n in names if "transformer.ff_out" not in n]
    )
    with pytest.raises(ConfigError, match=r"lora.targets group\(s\) \['lm_head'\] match no module"):
        validate_config(config_from_dict(tiny_values(tiny, tmp_path / "run")), world_size=1)


def test_report_to_needs_its_package(tiny, tmp_path, monkeypatch):
    values = tiny_values(tiny, tmp_path / "run")
    with pytest.raises(ConfigError, match="train.report_to='mlflow' is not one of"):
        config_from_dict({**values, "train": {**values["train"], "report_to": "mlflow"}})
    config = config_from_dict({**values, "train": {**values["train"], "report_to": "wandb"}})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name)
    )
    with pytest.raises(ConfigError, match="report_to=wandb needs the wandb package: pip install wandb"):
        validate_config(config, world_size=1)
    config.train.report_to = "tensorboard"
    validate_config(config, world_size=1)  # installed (requirements.txt)


def test_a_nonempty_output_dir_needs_resume_from(tiny, tmp_path):
    values = tiny_values(tiny, tmp_path / "run")
    (tmp_path / "run").mkdir()
    validate_config(config_from_dict(values), world_size=1)  # an empty folder is fine
    (tmp_path / "run" / "log.jsonl").write_text("")
    with pytest.raises(
        ConfigError, match=r"output_dir=.*run is not empty \(log.jsonl\); pass train.resume_from=latest"
    ):
        validate_config(config_from_dict(values), world_size=1)
    values["train"]["resume_from"] = "latest"
    validate_config(config_from_dict(values), world_size=1)


@pytest.mark.parametrize(
    "config_text, error, message",
    [
        (None, FileNotFoundError, r"model.init_from: checkpoint folder .*checkpoint has no config.json"),
        ("{not json", ConfigError, r"model.init_from: .*config.json is not valid JSON"),
        ('{"d_model": 64}', ConfigError, r"model.init_from: .*config.json has no model_type"),
    ],
)
def test_an_unreadable_init_from_config_is_one_line_and_exit_2(
    tiny, tmp_path, capsys, config_text, error, message
):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    values = tiny_values(tiny, tmp_path / "run")
    values["model"]["init_from"] = str(folder)
    with pytest.raises(error, match=message):
        validate_config(config_from_dict(values), world_size=1)
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(values))
    recipe = runpy.run_path(str(REPO / "recipes" / "retrofit_llada.py"))
    assert run_recipe(recipe["main"], ["--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.init_from: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, kind", [("- model\n- train\n", "list"), ("just words\n", "str")])
def test_a_config_that_is_not_a_mapping_is_one_line_and_exit_2(tmp_path, capsys, text, kind):
    (tmp_path / "bad.yaml").write_text(text)
    recipe = runpy.run_path(str(REPO / "recipes" / "retrofit_llada.py"))
    assert run_recipe(recipe["main"], ["--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: config {tmp_path / 'bad.yaml'} must be a mapping of settings (model:, data:, train: ...), "
        f"not a {kind}; see recipes/configs/*.yaml.\n"
    )


@pytest.mark.parametrize("override", ["train.max_steps\nmore=3", "train. max_steps=3", "train..max_steps=3"])
def test_an_override_key_with_a_newline_or_space_is_refused(override):
    with pytest.raises(ConfigError, match=r"holds a newline, space or empty part") as error:
        load_config(TINY_RETROFIT, [override])
    assert "\n" not in str(error.value)


def test_an_output_dir_that_cannot_be_created_fails_before_any_training(tiny, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    values = tiny_values(tiny, tmp_path / "a_file" / "run")
    with pytest.raises(ConfigError, match=r"cannot be created: .*a_file is a file, not a folder"):
        validate_config(config_from_dict(values), world_size=1)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(values))
    recipe = runpy.run_path(str(REPO / "recipes" / "retrofit_llada.py"))
    assert run_recipe(recipe["main"], ["--config", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"error: train.output_dir={tmp_path / 'a_file' / 'run'} cannot be created: {tmp_path / 'a_file'} is a "
        "file, not a folder; choose another train.output_dir.\n"
    )
