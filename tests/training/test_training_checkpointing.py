"""Checkpoint files, which checkpoints resume, and the export: merged and adapter folders, model cards, atomic writes."""

import copy
import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import AutoPeftModelForFeatureExtraction, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers.initialization import no_init_weights

from flexretrofit.models import FlexMDMConfig, FlexMDMForMaskedDiffusion, LLaDAModelLM
from flexretrofit.sampling import FlexGenerationConfig
from flexretrofit.training import (
    Trainer,
    build_accelerator,
    build_datasets,
    build_model,
    build_tokenizer,
    config_from_dict,
    list_checkpoints,
    run_recipe,
)
from flexretrofit.training.builders import base_model
from flexretrofit.training.checkpointing import CheckpointWriteError, checkpoint_problem, resolve_resume
from flexretrofit.training.export import NEW_MODULES_FILE, load_adapter_export
from flexretrofit.training.model_card import model_card

REPO = Path(__file__).resolve().parents[2]


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


def test_adapter_export_holds_only_the_adapter_and_new_modules(trained, tiny, tmp_path):
    trainer, _ = trained
    root, _ = tiny
    batch, reference = reference_outputs(trainer)
    trainer.config.export.lora = "adapter"
    folder = trainer.export(tmp_path / "adapter")
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", NEW_MODULES_FILE, "README.md"} <= files
    assert "model.safetensors" not in files and "config.json" not in files  # no base weights
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((root / "llada").resolve())
    assert adapter_config["task_type"] == "FEATURE_EXTRACTION" and adapter_config["modules_to_save"] is None
    adapter = load_file(folder / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    # A fresh retrofit's adapter addresses the LLaDA backbone, the checkpoint it names as its base.
    assert all(k.startswith("base_model.model.model.transformer.") for k in adapter)
    modules = load_file(folder / NEW_MODULES_FILE)
    assert {k.split(".")[0] for k in modules} == {"time_embedding", "adaln", "insertion_head"}

    loaded = load_adapter_export(folder)
    assert isinstance(loaded, FlexMDMForMaskedDiffusion)
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    assert_same_predictions(loaded, batch, reference)
    merged = load_adapter_export(folder, merge=True)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert_same_predictions(merged, batch, reference)


def test_exports_carry_the_trained_models_generation_config(trained, tmp_path):
    """The export rebuilds the model on the meta device; its sampler settings still come from the trained one."""
    trainer, _ = trained
    generation_config = base_model(trainer.accelerator.unwrap_model(trainer.model)).generation_config
    default = FlexGenerationConfig()
    saved = copy.deepcopy(generation_config)
    steps, confidence = default.steps + 7, "entropy" if default.confidence != "entropy" else "position"
    generation_config.update(steps=steps, confidence=confidence)
    try:
        trainer.config.export.lora = "merge"
        merged = FlexMDMForMaskedDiffusion.from_pretrained(trainer.export(tmp_path / "merged"))
        trainer.config.export.lora = "adapter"
        folder = trainer.export(tmp_path / "adapter")
    finally:
        base_model(trainer.accelerator.unwrap_model(trainer.model)).generation_config = saved
    assert (merged.generation_config.steps, merged.generation_config.confidence) == (steps, confidence)
    for loaded in (load_adapter_export(folder), load_adapter_export(folder, merge=True)):
        assert isinstance(loaded.generation_config, FlexGenerationConfig)
        assert (loaded.generation_config.steps, loaded.generation_config.confidence) == (steps, confidence)


def test_adapter_export_loads_with_auto_peft_model(trained, tmp_path):
    """peft's own loader puts the adapter on the base checkpoint; with the new modules it is the trained model."""
    trainer, _ = trained
    batch, reference = reference_outputs(trainer)
    trainer.config.export.lora = "adapter"
    folder = trainer.export(tmp_path / "adapter")
    backbone = AutoPeftModelForFeatureExtraction.from_pretrained(str(folder))
    assert isinstance(backbone.get_base_model(), LLaDAModelLM)
    trained_lora = {
        k.replace("backbone.", "", 1): v
        for k, v in get_peft_model_state_dict(trainer.model).items()
        if "lora_" in k
    }
    loaded_lora = get_peft_model_state_dict(backbone)
    assert trained_lora.keys() == loaded_lora.keys()
    for key, value in trained_lora.items():
        torch.testing.assert_close(loaded_lora[key], value, atol=0, rtol=0, msg=key)
    with no_init_weights():  # keep the loaded backbone and adapter as they are
        flex = FlexMDMForMaskedDiffusion(
            FlexMDMConfig.from_json_file(str(folder / "flexmdm_config.json")),
            backbone=backbone.get_base_model(),
        )
    flex.load_state_dict(load_file(folder / NEW_MODULES_FILE), strict=False)
    assert_same_predictions(flex, batch, reference)
    # The new modules as initialised give other slot predictions: the saved ones really are the trained ones.
    fresh = FlexMDMForMaskedDiffusion.from_llada(backbone.get_base_model().config._name_or_path)
    with torch.no_grad():
        out = fresh.eval()(batch["xt"], batch["t"], attention_mask=batch["xt_attention_mask"])
    assert not torch.allclose(out.expected_gaps, reference.expected_gaps, atol=1e-4)


def test_every_export_has_a_model_card(trained, tmp_path):
    trainer, _ = trained
    trainer.config.export.lora = "merge"
    card = (trainer.export(tmp_path / "merged") / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "flexretrofit" and front["pipeline_tag"] == "text-generation"
    assert {"flexmdm", "masked-diffusion", "lora"} <= set(front["tags"])
    assert "base_model" not in front  # a local folder is no hub id; the body names it
    assert f"`{trainer.config.model.init_from}`" in card and "geometric" in card
    assert "FlexMDMForMaskedDiffusion.from_pretrained" in card
    config_block = card.split("```yaml")[1].split("```")[0]
    assert yaml.safe_load(config_block)["train"]["max_steps"] == 3
    trainer.config.model.init_from, original = "GSAI-ML/LLaDA-8B-Base", trainer.config.model.init_from
    try:
        hub_card = model_card(trainer.config, 3, "adapter", {})
    finally:
        trainer.config.model.init_from = original
    assert yaml.safe_load(hub_card.split("---")[1])["base_model"] == "GSAI-ML/LLaDA-8B-Base"
    assert "load_adapter_export" in hub_card


def test_an_interrupted_export_leaves_the_previous_folder(trained, tmp_path, monkeypatch):
    trainer, _ = trained
    trainer.config.export.lora = "merge"
    target = trainer.export(tmp_path / "final")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill while the tokenizer is being written looks like

    monkeypatch.setattr(trainer.tokenizer, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.export(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # untouched, still complete
    with pytest.raises(KeyboardInterrupt):
        trainer.export(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # never a folder that looks finished
    monkeypatch.undo()
    assert (trainer.export(tmp_path / "fresh") / "tokenizer.json").is_file()  # a rerun replaces the leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "final.tmp", "fresh"]  # a kill's leftover
    trainer.export(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "fresh"]


def _copy_checkpoint(source: Path, step: int) -> Path:
    target = source.parent / f"step_{step:07d}"
    shutil.copytree(source, target)
    state = json.loads((target / "trainer_state.json").read_text())
    (target / "trainer_state.json").write_text(json.dumps({**state, "step": step}))
    return target


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: (p / "model.safetensors").unlink(), "no model weights"),
        (
            lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-100]),
            "truncated",
        ),
        (lambda p: (p / "optimizer.bin").write_bytes((p / "optimizer.bin").read_bytes()[:1000]), "truncated"),
        (lambda p: (p / "optimizer.bin").write_bytes(b""), "empty"),
        (lambda p: (p / "trainer_state.json").write_text('{"step": 1'), "unreadable"),
    ],
)
def test_incomplete_checkpoints_are_skipped_with_a_warning(trained, damage, reason):
    _, out = trained
    newest = list_checkpoints(out)[-1]
    broken = _copy_checkpoint(newest, 99)
    try:
        damage(broken)
        with pytest.warns(UserWarning, match=f"skipping incomplete checkpoint .*step_0000099.*{reason}"):
            assert resolve_resume("latest", out) == newest
        assert checkpoint_problem(newest) is None
        with pytest.raises(FileNotFoundError, match=reason):
            resolve_resume(str(broken), out)
    finally:
        shutil.rmtree(broken)


def test_mdm_export_is_a_llada_folder(tiny, tmp_path):
    root, data = tiny
    values = yaml.safe_load((REPO / "recipes" / "configs" / "tiny_instruct_mdm_cpu.yaml").read_text())
    values["model"]["init_from"] = str(root / "llada")
    values["data"]["sources"] = [{"path": str(data["gsm8k"])}]
    values["data"]["eval_sources"] = [{"path": str(data["gsm8k_eval"])}]
    values["train"].update(output_dir=str(tmp_path / "run"), max_steps=1, save_every=None)
    values["optim"]["warmup_ratio"] = 0.0  # the one step trains: the adapter below is not its zero init
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

    # The adapter export of the MDM is a plain PEFT adapter over the LLaDA checkpoint: peft alone loads it.
    config.export.lora = "adapter"
    adapter_folder = trainer.export(tmp_path / "adapter")
    assert (
        not (adapter_folder / NEW_MODULES_FILE).exists()
        and not (adapter_folder / "model.safetensors").exists()
    )
    assert "LLaDAModelLM.from_pretrained" not in (adapter_folder / "README.md").read_text()
    peft_model = AutoPeftModelForFeatureExtraction.from_pretrained(str(adapter_folder)).eval()
    assert any(v.abs().max() > 0 for k, v in get_peft_model_state_dict(peft_model).items() if "lora_B" in k)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, expected, atol=2e-5, rtol=1e-4)
        base = LLaDAModelLM.from_pretrained(root / "llada").eval()
        assert not torch.allclose(base(ids).logits, expected, atol=1e-4)
    torch.testing.assert_close(
        load_adapter_export(adapter_folder)(ids).logits, expected, atol=2e-5, rtol=1e-4
    )


def _flip_a_weight_byte(folder: Path) -> None:
    """Flip one bit in the data of the last tensor of model.safetensors (the header stays readable)."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_checkpoint_is_refused_and_the_previous_one_resumed(trained):
    _, out = trained
    newest = list_checkpoints(out)[-1]
    broken = _copy_checkpoint(newest, 99)
    try:
        _flip_a_weight_byte(broken)
        assert checkpoint_problem(broken) is None  # structurally whole: only the checksum tells
        with pytest.warns(
            UserWarning, match=r"skipping corrupted checkpoint .*step_0000099.*model.safetensors"
        ):
            assert resolve_resume("latest", out) == newest
        with pytest.raises(FileNotFoundError, match="does not match its recorded checksum") as error:
            resolve_resume(str(broken), out)
        assert "\n" not in str(error.value)
    finally:
        shutil.rmtree(broken)


def test_a_checkpoint_written_before_checksums_still_resumes(trained):
    _, out = trained
    broken = _copy_checkpoint(list_checkpoints(out)[-1], 99)
    try:
        state = json.loads((broken / "trainer_state.json").read_text())
        assert set(state["checksums"]) >= {"model.safetensors", "optimizer.bin"}
        del state["checksums"]
        (broken / "trainer_state.json").write_text(json.dumps(state))
        _flip_a_weight_byte(broken)  # nothing to compare with: taken as before
        assert resolve_resume("latest", out) == broken
    finally:
        shutil.rmtree(broken)


FULL_DISK = "No space left on device"


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, FULL_DISK),
        SafetensorError(
            f'Error while serializing: IoError(Os {{ code: 28, kind: StorageFull, message: "{FULL_DISK}" }})'
        ),
    ],
)
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(
    trained, monkeypatch, capsys, failure
):
    trainer, out = trained
    before = list_checkpoints(out)

    def save_half_then_fail(folder, **kwargs):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 64)  # what a full disk leaves
        raise failure

    monkeypatch.setattr(trainer.accelerator, "save_state", save_half_then_fail)
    with pytest.raises(CheckpointWriteError) as error:
        trainer.save()
    tmp = out / "checkpoints" / "step_0000003.tmp"
    assert str(error.value) == (
        f"could not write checkpoint to {tmp}: {FULL_DISK}; free space and rerun the same command with "
        "train.resume_from=latest to resume from step 3."
    )
    assert not tmp.exists() and list_checkpoints(out) == before  # the partial folder is gone
    assert resolve_resume("latest", out) == before[-1]

    def main(argv):
        trainer.save()

    assert run_recipe(main, []) == 1
    assert capsys.readouterr().err == f"error: {error.value}\n"


def test_a_full_disk_at_the_export_is_one_line(trained, tmp_path, monkeypatch):
    import flexretrofit.training.export as export_module

    trainer, _ = trained

    def export_on_a_full_disk(accelerator, model, tokenizer, target, *args, **kwargs):
        Path(f"{target}.tmp").mkdir(parents=True)
        raise OSError(errno.ENOSPC, FULL_DISK)

    monkeypatch.setattr(export_module, "export_model", export_on_a_full_disk)
    with pytest.raises(
        CheckpointWriteError, match=rf"could not write the export to .*final: {FULL_DISK}; free"
    ):
        trainer.export(tmp_path / "final")
    assert not (tmp_path / "final.tmp").exists() and not (tmp_path / "final").exists()


def test_only_the_newest_keep_checkpoints_remain_and_each_records_its_checksums(trained, tmp_path):
    from flexretrofit.training.checkpointing import checksum_problem, save_checkpoint

    trainer, _ = trained
    for step in (1, 2, 3):
        save_checkpoint(trainer.accelerator, tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert all(checksum_problem(p) is None for p in list_checkpoints(tmp_path))
