"""Checkpoint checks before loading: the wrong model type, a missing config field, a truncated or corrupt
shard and unreadable JSON each fail at once with one message naming the file and what to do."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedConfig, PreTrainedModel

from flexretrofit.models import (
    CheckpointError,
    FlexMDMForMaskedDiffusion,
    LLaDAModelLM,
    load_pretrained,
    read_model_type,
    resolve_dtype,
)
from flexretrofit.models.checkpoint import check_safetensors_file
from flexretrofit.testing import save_tiny_llada_checkpoint, tiny_flexmdm


@pytest.fixture()
def llada_folder(tmp_path):
    return save_tiny_llada_checkpoint(tmp_path / "llada", num_shards=2, seed=1)


@pytest.fixture()
def flex_folder(tmp_path):
    folder = tmp_path / "flex"
    tiny_flexmdm(seed=2).save_pretrained(folder)
    return folder


@pytest.fixture()
def no_weight_loading(monkeypatch):
    """Make transformers' loading fail loudly: the checks must answer before it is reached."""

    def refuse(*args, **kwargs):
        raise AssertionError("transformers' from_pretrained was reached; the checkpoint check came too late")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))


def edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_flexmdm_from_a_llada_folder_fails_before_loading_and_names_the_right_calls(
    llada_folder, no_weight_loading
):
    with pytest.raises(CheckpointError) as error:
        FlexMDMForMaskedDiffusion.from_pretrained(llada_folder)
    message = str(error.value)
    assert "holds a LLaDA model (model_type llada)" in message
    assert "LLaDAModelLM.from_pretrained" in message and "FlexMDMForMaskedDiffusion.from_llada" in message
    assert "\n" not in message


def test_llada_from_a_flexmdm_folder_names_the_flexmdm_class(flex_folder, no_weight_loading):
    with pytest.raises(
        CheckpointError, match=r"holds a FlexMDM model .*FlexMDMForMaskedDiffusion\.from_pretrained"
    ):
        LLaDAModelLM.from_pretrained(flex_folder)
    with pytest.raises(CheckpointError, match="holds a FlexMDM model"):  # from_llada goes the same way
        FlexMDMForMaskedDiffusion.from_llada(flex_folder)


def test_another_model_type_is_named(llada_folder, no_weight_loading):
    edit_config(llada_folder, lambda c: c.update(model_type="llama"))
    with pytest.raises(CheckpointError, match="type 'llama'; LLaDAModelLM loads model_type 'llada'"):
        LLaDAModelLM.from_pretrained(llada_folder)


def test_a_missing_architecture_field_is_named_with_its_file(llada_folder, no_weight_loading):
    edit_config(llada_folder, lambda c: c.pop("n_layers"))
    with pytest.raises(CheckpointError) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    assert "config.json lacks n_layers" in str(error.value) and str(llada_folder) in str(error.value)


def test_flexmdm_fields_are_checked_inside_the_backbone_config_too(flex_folder, no_weight_loading):
    edit_config(flex_folder, lambda c: (c["backbone_config"].pop("d_model"), c.pop("insertion_schedule")))
    with pytest.raises(CheckpointError, match="lacks insertion_schedule, backbone_config.d_model"):
        FlexMDMForMaskedDiffusion.from_pretrained(flex_folder)
    edit_config(flex_folder, lambda c: c.pop("backbone_config"))
    with pytest.raises(CheckpointError, match="lacks insertion_schedule, backbone_config"):
        FlexMDMForMaskedDiffusion.from_pretrained(flex_folder)


def test_a_truncated_shard_is_named_as_incomplete(llada_folder, no_weight_loading):
    shard = llada_folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    message = str(error.value)
    assert str(shard) in message and "incomplete or corrupt" in message and "re-download" in message


@pytest.mark.parametrize(
    "content", [b"", b"\x05\x00", b"\xff" * 8 + b"{}", b"\x04\x00\x00\x00\x00\x00\x00\x00{x}]"]
)
def test_a_corrupt_header_is_named(tmp_path, content):
    file = tmp_path / "model.safetensors"
    file.write_bytes(content)
    with pytest.raises(CheckpointError, match="model.safetensors is incomplete or corrupt"):
        check_safetensors_file(file)


def test_a_complete_file_passes_the_header_check(flex_folder):
    check_safetensors_file(flex_folder / "model.safetensors")  # raises if the check is too strict


SECOND_SHARD = "model-00002-of-00002.safetensors"


def move_second_shard_out(folder, name_in_index):
    """Move the second shard beside the folder and point the index at it as ``name_in_index(outside)``."""
    outside = folder.parent / "outside.safetensors"
    (folder / SECOND_SHARD).rename(outside)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    name = name_in_index(outside)
    index["weight_map"] = {k: (name if v == SECOND_SHARD else v) for k, v in index["weight_map"].items()}
    index_file.write_text(json.dumps(index))
    return name


@pytest.mark.parametrize(
    "name_in_index", [lambda outside: "../outside.safetensors", lambda outside: str(outside)]
)
def test_a_shard_named_outside_the_folder_is_refused(llada_folder, no_weight_loading, name_in_index):
    name = move_second_shard_out(llada_folder, name_in_index)
    with pytest.raises(CheckpointError) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    message = str(error.value)
    assert f"names shard {name!r}" in message and "lies outside the checkpoint folder" in message
    assert "\n" not in message


def test_a_shard_linked_out_of_the_folder_is_refused_but_a_hub_cache_snapshot_loads(tmp_path):
    folder = save_tiny_llada_checkpoint(tmp_path / "llada", num_shards=2, seed=1)
    (folder / SECOND_SHARD).rename(tmp_path / "outside.safetensors")
    (folder / SECOND_SHARD).symlink_to(tmp_path / "outside.safetensors")
    with pytest.raises(CheckpointError, match=f"{SECOND_SHARD}', which lies outside the checkpoint folder"):
        LLaDAModelLM.from_pretrained(folder)

    # The hub client's cache: every file of a snapshot links to ../../blobs/<hash> of the same repo.
    repo = tmp_path / "hub" / "models--owner--tiny"
    snapshot, blobs = repo / "snapshots" / "0123abc", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    (folder / SECOND_SHARD).unlink()
    (tmp_path / "outside.safetensors").rename(folder / SECOND_SHARD)
    for number, file in enumerate(sorted(folder.iterdir())):
        file.rename(blobs / f"blob{number}")
        (snapshot / file.name).symlink_to(f"../../blobs/blob{number}")
    assert type(LLaDAModelLM.from_pretrained(snapshot)) is LLaDAModelLM


def rewrite_tensor(folder, key, change):
    """Replace tensor ``key`` of whichever shard holds it by ``change(tensor)``."""
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        if key in tensors:
            tensors[key] = change(tensors[key])
            save_file(tensors, shard, metadata={"format": "pt"})
            return shard
    raise KeyError(key)


def test_an_integer_weight_is_refused_naming_the_tensor(llada_folder, no_weight_loading):
    key = "model.transformer.blocks.1.up_proj.weight"
    shard = rewrite_tensor(llada_folder, key, lambda tensor: (tensor * 100).to(torch.int64))
    with pytest.raises(CheckpointError) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    message = str(error.value)
    assert f"{shard} stores tensor {key} as I64" in message and "floating point" in message
    assert "\n" not in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_weight_is_refused_naming_the_tensor(llada_folder, bad):
    key = "model.transformer.blocks.0.attn_norm.weight"

    def poison(tensor):
        tensor = tensor.clone()
        tensor[3] = bad
        return tensor

    rewrite_tensor(llada_folder, key, poison)
    with pytest.raises(CheckpointError) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    message = str(error.value)
    assert f"tensor {key} holds NaN or infinite values" in message and "re-download" in message
    assert "\n" not in message


def test_a_flexmdm_with_all_nan_weights_is_refused(flex_folder):
    key = "insertion_head.proj.weight"
    rewrite_tensor(flex_folder, key, lambda tensor: torch.full_like(tensor, float("nan")))
    with pytest.raises(CheckpointError, match=f"tensor {re.escape(key)} holds NaN"):
        FlexMDMForMaskedDiffusion.from_pretrained(flex_folder)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("vocab_size", -5, "vocab_size=-5 must be a positive integer"),
        ("n_layers", 0, "n_layers=0 must be a positive integer"),
        ("n_heads", 5, "d_model=64 is not divisible by n_heads=5"),
        ("mask_token_id", 1000000, r"mask_token_id=1000000 is not a token id of the vocabulary \[0, "),
    ],
)
def test_a_nonsense_config_value_is_named_with_its_file(
    llada_folder, no_weight_loading, field, value, message
):
    edit_config(llada_folder, lambda config: config.update({field: value}))
    with pytest.raises(CheckpointError, match=message) as error:
        LLaDAModelLM.from_pretrained(llada_folder)
    assert str(llada_folder / "config.json") in str(error.value) and "\n" not in str(error.value)


def test_a_nonsense_backbone_value_of_a_flexmdm_is_named_with_its_file(flex_folder, no_weight_loading):
    edit_config(flex_folder, lambda config: config["backbone_config"].update(vocab_size=-5))
    with pytest.raises(CheckpointError, match=r"flex/config.json is not a valid FlexMDM.*vocab_size=-5"):
        FlexMDMForMaskedDiffusion.from_pretrained(flex_folder)


def test_unreadable_json_is_named(llada_folder, no_weight_loading):
    (llada_folder / "config.json").write_text('{"d_model": 64,')
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON"):
        LLaDAModelLM.from_pretrained(llada_folder)
    (llada_folder / "config.json").write_text("{}")
    (llada_folder / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json does not hold a JSON object"):
        LLaDAModelLM.from_pretrained(llada_folder)


def test_a_missing_relative_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch, no_weight_loading):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="runs/no_such/final does not exist"):
        FlexMDMForMaskedDiffusion.from_pretrained("runs/no_such/final")


def test_read_model_type_and_load_pretrained_dispatch(llada_folder, flex_folder, tmp_path):
    assert (read_model_type(llada_folder), read_model_type(flex_folder)) == ("llada", "flexmdm")
    assert type(load_pretrained(llada_folder)) is LLaDAModelLM
    model = load_pretrained(flex_folder, dtype=torch.bfloat16)
    assert type(model) is FlexMDMForMaskedDiffusion and model.dtype == torch.bfloat16
    edit_config(flex_folder, lambda c: c.update(model_type="bert"))
    with pytest.raises(CheckpointError, match="type 'bert'; this project loads 'llada' and 'flexmdm'"):
        load_pretrained(flex_folder)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        read_model_type(tmp_path)


def test_read_model_type_says_what_is_wrong_with_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder\n")
    with pytest.raises(FileNotFoundError, match="a_file is a file; pass the folder that holds config.json"):
        read_model_type(tmp_path / "a_file")
    with pytest.raises(FileNotFoundError, match="checkpoint folder runs/none/final does not exist"):
        read_model_type("runs/none/final")
    (tmp_path / "config.json").write_text('{"model_type": "llada",')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        read_model_type(tmp_path)
    (tmp_path / "config.json").write_text('{"d_model": 8}')
    with pytest.raises(CheckpointError, match="config.json has no model_type"):
        read_model_type(tmp_path)

    def unreachable(*args, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(PreTrainedConfig, "get_config_dict", staticmethod(unreachable))
    with pytest.raises(
        CheckpointError, match="owner/name is not a local folder and its config.json could not"
    ):
        read_model_type("owner/name")


def test_resolve_dtype_takes_auto_and_dtype_names_and_refuses_the_rest(monkeypatch):
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    assert resolve_dtype("torch.float16", "cpu") is torch.float16
    assert resolve_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_dtype("auto", "cuda:0") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32  # bf16 "auto" is for GPUs only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_dtype("auto", "cuda") is torch.float32
    for name in ("zeros", "float8", "cuda", ""):  # torch attributes that are not dtypes, and no name
        with pytest.raises(ValueError, match=re.escape(f"dtype={name!r} is not a torch dtype; use auto")):
            resolve_dtype(name, "cpu")
