"""Checkpoint files and the export: safetensors only, from_pretrained loads merged and adapter exports."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM
from flexretrofit.testing import save_tiny_llada_checkpoint
from flexretrofit.testing_cli import write_tiny_data
from flexretrofit.training import (
    Trainer,
    build_accelerator,
    build_datasets,
    build_model,
    build_tokenizer,
    config_from_dict,
    list_checkpoints,
)
from flexretrofit.training.checkpointing import resolve_resume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    save_tiny_llada_checkpoint(root / "llada")
    return root, write_tiny_data(root / "data")


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A tiny retrofit trained 3 steps with LoRA (dropout on), kept in memory with its batches."""
    root, data = tiny
    out = tmp_path_factory.mktemp("run")
    values = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_retrofit_cpu.yaml").read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["corpus"])}]
    values["train"].update(output_dir=str(out), max_steps=3, save_every=2)
    config = config_from_dict(values)
    accelerator = build_accelerator(config)
    tokenizer = build_tokenizer(config.model)
    model = build_model(config.model, config.lora, seed=0)
    train_set, eval_set = build_datasets(config, tokenizer)
    trainer = Trainer(config, accelerator, model, train_set, eval_set, tokenizer)
    trainer.train()
    return trainer, out


def reference_outputs(trainer):
    """The trained model's predictions (eval mode: no LoRA dropout) on a fixed batch."""
    batch = trainer.eval_batches[0]
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"])
    trainer.model.train()
    return batch, out


def assert_same_predictions(loaded, batch, reference):
    with torch.no_grad():
        out = loaded.eval()(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"])
    mask = batch["xt_attention_mask"]
    torch.testing.assert_close(out.logits[mask], reference.logits[mask], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.expected_gaps, reference.expected_gaps, atol=2e-5, rtol=1e-4)


def test_checkpoints_hold_safetensors_weights_and_json_state(trained):
    trainer, out = trained
    checkpoints = list_checkpoints(out)
    assert [p.name for p in checkpoints] == ["step_0000002", "step_0000003"]
    files = {p.name for p in checkpoints[-1].iterdir()}
    assert "model.safetensors" in files and "trainer_state.json" in files
    assert not any(name.endswith((".bin", ".pt")) and "model" in name for name in files)  # no pickled weights
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["scheduler"]["last_epoch"] == 3
    assert state["sampler"]["position"] == 3 and state["config"]["train"]["max_steps"] == 3
    assert resolve_resume("latest", out) == checkpoints[-1]
    assert resolve_resume(None, out) is None


def test_merged_export_loads_with_from_pretrained(trained, tmp_path):
    trainer, _ = trained
    batch, reference = reference_outputs(trainer)
    trainer.config.export.lora = "merge"
    folder = trainer.export(tmp_path / "merged")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "adapter_config.json").exists()
    loaded = FlexMDMForMaskedDiffusion.from_pretrained(folder)
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    assert loaded.config.insertion_schedule == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert_same_predictions(loaded, batch, reference)


def test_adapter_export_loads_with_from_pretrained(trained, tmp_path):
    trainer, _ = trained
    batch, reference = reference_outputs(trainer)
    trainer.config.export.lora = "adapter"
    folder = trainer.export(tmp_path / "adapter")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    loaded = FlexMDMForMaskedDiffusion.from_pretrained(folder)  # base weights + the adapter beside them
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    assert_same_predictions(loaded, batch, reference)
    # Without the adapter, the base weights alone give other predictions: the adapter really is applied.
    base = FlexMDMForMaskedDiffusion(loaded.config).eval()
    base.load_state_dict(load_file(folder / "model.safetensors"))
    with torch.no_grad():
        out = base(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"])
    assert not torch.allclose(out.logits, reference.logits, atol=1e-4)


def test_mdm_export_is_a_llada_folder(tiny, tmp_path):
    root, data = tiny
    values = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_instruct_mdm_cpu.yaml").read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["gsm8k"])}]
    values["data"]["eval_sources"] = [{"path": str(data["gsm8k_eval"])}]
    values["train"].update(output_dir=str(tmp_path), max_steps=1, save_every=None)
    config = config_from_dict(values)
    accelerator = build_accelerator(config)
    tokenizer = build_tokenizer(config.model)
    model = build_model(config.model, config.lora, seed=0)
    train_set, eval_set = build_datasets(config, tokenizer)
    assert set(len(ids) for ids in train_set["input_ids"]) == {200}  # the fixed EOS-padded canvas
    trainer = Trainer(config, accelerator, model, train_set, eval_set, tokenizer)
    trainer.train()
    folder = trainer.export()
    loaded = LLaDAModelLM.from_pretrained(folder)
    ids = torch.tensor([train_set[0]["input_ids"][:16]])
    with torch.no_grad():
        expected = trainer.model.eval()(input_ids=ids).logits
        torch.testing.assert_close(loaded(ids).logits, expected, atol=2e-5, rtol=1e-4)
