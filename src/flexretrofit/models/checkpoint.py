"""Checks of a checkpoint before any weights load, each failing with one message that names the file.

A local folder must hold ``config.json`` of the right ``model_type`` with every field that shapes the
weights (a missing one would silently take the 8B default and load as a wall of missing keys, or
allocate an 8B model), and complete safetensors files (the header of each is read, never the tensors).
A hub id gets the config checks only; the hub client verifies what it downloads.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

# Fields of a LLaDA config.json that set the shapes of the weights and have no derived default.
LLADA_ARCHITECTURE_FIELDS = (
    "d_model",
    "n_layers",
    "n_heads",
    "mlp_hidden_size",
    "vocab_size",
    "embedding_size",
)
# Download options of ``from_pretrained`` that also apply to reading config.json from the hub.
DOWNLOAD_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
# safetensors dtypes that cannot hold a weight: every parameter of these models is floating point, and
# loading would cast such a tensor to float without a word.
_INTEGER_DTYPES = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"})
# Elements checked at a time for NaN/inf: bounds the temporary boolean tensor on an 8B model's embedding.
_FINITE_CHUNK = 1 << 24

_MODEL_NAMES = {"llada": "LLaDA", "flexmdm": "FlexMDM"}
# (expected model_type, found model_type) -> what to do instead.
_WRONG_TYPE_ADVICE = {
    ("flexmdm", "llada"): (
        "load it with LLaDAModelLM.from_pretrained({path!r}), or retrofit it with "
        "FlexMDMForMaskedDiffusion.from_llada({path!r})"
    ),
    ("llada", "flexmdm"): (
        "load it with FlexMDMForMaskedDiffusion.from_pretrained({path!r}) "
        "(its LLaDA backbone is model.backbone)"
    ),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and says what to do."""


@dataclass(frozen=True)
class CheckpointKind:
    """What a model class expects of a checkpoint: its ``model_type`` and the config fields it needs.

    required_fields: top-level keys config.json must have; nested_fields: keys required inside a
    sub-config (``{"backbone_config": (...)}``).
    """

    model_type: str
    class_name: str
    required_fields: tuple[str, ...] = ()
    nested_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def check_checkpoint(
    path: str | os.PathLike,
    kind: CheckpointKind,
    download_kwargs: dict[str, Any],
    config_class: type | None = None,
) -> None:
    """Fail before anything large is allocated when ``path`` cannot be loaded as ``kind``.

    ``config_class``: built from config.json here, so that a nonsense value (``vocab_size: -5``) is
    reported with the file it came from.

    Raises:
        FileNotFoundError: a local folder without config.json or without (some of) its weights.
        CheckpointError: another model type, a config.json without a required field or with an invalid
            value, unreadable JSON, a shard outside the folder, a truncated / corrupt safetensors file, or
            a tensor stored as an integer type.
    """
    folder = Path(path) / (download_kwargs.get("subfolder") or "")
    if is_local_path(path):
        check_checkpoint_folder(folder)
        config = read_json(folder / "config.json")
        source = str(folder / "config.json")
    else:
        config = _hub_config(path, download_kwargs)
        if config is None:  # unreachable or unknown id: from_pretrained reports it in its own words
            return
        source = f"config.json of {path}"
    check_model_type(config, kind, source, str(path))
    check_required_fields(config, kind, source)
    if config_class is not None:
        try:
            config_class.from_dict(copy.deepcopy(config))
        except ValueError as error:
            raise CheckpointError(f"{source} is not a valid {kind.class_name} config: {error}") from None
    if folder.is_dir():
        for weights in _weight_files(folder):
            check_safetensors_file(weights)


def is_local_path(path: str | os.PathLike) -> bool:
    """True unless ``path`` can only be a hub id (``name`` or ``owner/name``, not on disk)."""
    text = str(path)
    return Path(path).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def read_model_type(path: str | os.PathLike, **download_kwargs) -> str:
    """``model_type`` of a checkpoint's config.json (local folder, or read from the hub).

    Raises:
        FileNotFoundError: a local path that is not a folder with config.json.
        CheckpointError: config.json unreadable, without ``model_type``, or not reachable on the hub.
    """
    if is_local_path(path):
        config_file = _config_file(Path(path) / (download_kwargs.get("subfolder") or ""))
        config, source = read_json(config_file), str(config_file)
    else:
        config, source = _hub_config(path, download_kwargs), f"config.json of {path}"
        if config is None:
            raise CheckpointError(
                f"{path} is not a local folder and its config.json could not be read from the hub; "
                "pass a local checkpoint folder (or check the id and your connection)"
            )
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError(f"{source} has no model_type; it is not a transformers checkpoint config")
    return model_type


def _config_file(folder: Path) -> Path:
    """``folder / "config.json"``; a FileNotFoundError saying what to pass when there is none."""
    if not folder.is_dir():
        problem = f"{folder} is a file" if folder.exists() else f"checkpoint folder {folder} does not exist"
        raise FileNotFoundError(f"{problem}; pass the folder that holds config.json")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"checkpoint folder {folder} has no config.json; pass the folder that holds config.json"
        )
    return config_file


def _hub_config(path: str | os.PathLike, download_kwargs: dict[str, Any]) -> dict | None:
    from transformers import PreTrainedConfig

    try:
        config, _ = PreTrainedConfig.get_config_dict(str(path), **download_kwargs)
    except (OSError, ValueError):
        return None
    return config


def check_model_type(config: dict, kind: CheckpointKind, source: str, path: str) -> None:
    """Raise when config.json names another ``model_type`` (a missing one is left to the field checks)."""
    found = config.get("model_type")
    if found is None or found == kind.model_type:
        return
    name = _MODEL_NAMES.get(found)
    advice = _WRONG_TYPE_ADVICE.get((kind.model_type, found))
    if name is None or advice is None:
        raise CheckpointError(
            f"{source} holds a model of type {found!r}; {kind.class_name} loads model_type "
            f"{kind.model_type!r} checkpoints"
        )
    raise CheckpointError(
        f"{source} holds a {name} model (model_type {found}), not a {_MODEL_NAMES[kind.model_type]}; "
        + advice.format(path=path)
    )


def check_required_fields(config: dict, kind: CheckpointKind, source: str) -> None:
    """Raise naming every required field config.json lacks (top level and inside its sub-configs)."""
    missing = [name for name in kind.required_fields if config.get(name) is None]
    for parent, names in kind.nested_fields.items():
        sub = config.get(parent)
        if isinstance(sub, Mapping):
            missing += [f"{parent}.{name}" for name in names if sub.get(name) is None]
        elif parent not in missing:
            missing.append(parent)
    if missing:
        raise CheckpointError(
            f"{source} lacks {', '.join(missing)}, which a {kind.class_name} checkpoint needs (without them "
            "the defaults of the 8B model would be used); restore the file from the checkpoint it came from, "
            "or re-export the model with save_pretrained"
        )


def read_json(file: Path) -> dict:
    """A JSON object from ``file``, or a :class:`CheckpointError` naming the file."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{file} is not valid JSON ({error}); re-download it or re-export the checkpoint"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{file} does not hold a JSON object; re-download it or re-export the checkpoint"
        )
    return value


def check_checkpoint_folder(path: str | os.PathLike) -> None:
    """Fail early, naming the file, when a local checkpoint folder is incomplete. Hub ids pass through."""
    folder = Path(path)
    if not folder.is_dir() and not is_local_path(path):
        return
    _config_file(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        missing = [s for s in _index_shards(index) if not shard_path(folder, s, index).is_file()]
        if missing:
            raise FileNotFoundError(
                f"checkpoint folder {folder} is missing shard(s) {missing} listed in "
                "model.safetensors.index.json; re-download or copy the complete folder"
            )
    elif not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"checkpoint folder {folder} has no model.safetensors.index.json and no model.safetensors; "
            "pass the folder that holds config.json and the safetensors weights (pickled .bin is not loaded)"
        )


def _index_shards(index: Path) -> list[str]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} has no weight_map; re-download it or re-export the checkpoint")
    return sorted(set(weight_map.values()))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [shard_path(folder, shard, index) for shard in _index_shards(index)]
    return [shard_path(folder, "model.safetensors")]


def shard_path(folder: Path, name: str, index: Path | None = None) -> Path:
    """``folder / name``, or a :class:`CheckpointError` when that file lies outside ``folder``.

    The name comes from a downloaded index (``../../outside.safetensors``, an absolute path) or the file
    is a symlink leaving the folder: either way loading would read a file the checkpoint does not hold.
    A hub cache snapshot's links into its own ``blobs`` folder are how the hub client stores every
    download, so those stay allowed.
    """
    path = folder / name
    root = folder.resolve()
    target = path.resolve()
    inside = not Path(name).is_absolute() and ".." not in Path(name).parts
    if inside and (target.is_relative_to(root) or _is_hub_cache_blob(target, root)):
        return path
    source = f"{index} names shard {name!r}, which" if index is not None else f"{path}"
    raise CheckpointError(
        f"{source} lies outside the checkpoint folder {folder} (resolves to {target}); a checkpoint loads "
        "only files inside its folder: copy the weights into it (or pass the folder that holds them)"
    )


def _is_hub_cache_blob(target: Path, root: Path) -> bool:
    """True when ``root`` is (inside) a hub cache snapshot and ``target`` is a blob of the same repo."""
    for ancestor in (root, *root.parents):
        if ancestor.name == "snapshots":
            return target.parent == ancestor.parent / "blobs"
    return False


def check_safetensors_file(file: Path) -> None:
    """Raise naming ``file`` when it is shorter than its own header says, its header is unreadable, or it
    stores a tensor as an integer type (every weight of these models is floating point).

    A safetensors file is an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype and byte range, then the data; only the first two are read.
    """

    def corrupt(detail: str) -> CheckpointError:
        return CheckpointError(
            f"{file} is incomplete or corrupt ({detail}); re-download it or re-export the checkpoint"
        )

    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise corrupt(f"{size} bytes, shorter than a safetensors header")
        header_length = int.from_bytes(prefix, "little")
        if header_length > size - 8:
            raise corrupt(f"{size} bytes, but its header alone claims {header_length}")
        try:
            header = json.loads(handle.read(header_length))
            tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
            ends = [entry["data_offsets"][1] for entry in tensors.values()]
            integers = sorted(name for name, entry in tensors.items() if entry["dtype"] in _INTEGER_DTYPES)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise corrupt("unreadable header") from None
    needed = 8 + header_length + max(ends, default=0)
    if size < needed:
        raise corrupt(f"{size} bytes, but its tensors need {needed}")
    if integers:
        name = integers[0]
        more = f" (and {len(integers) - 1} more)" if len(integers) > 1 else ""
        raise CheckpointError(
            f"{file} stores tensor {name}{more} as {tensors[name]['dtype']}, but every weight of this model is "
            "floating point; the file is corrupt or not this model's checkpoint: re-download it or re-export "
            "the checkpoint with save_pretrained"
        )


def check_finite_weights(model: nn.Module, source: str | os.PathLike) -> None:
    """Raise a :class:`CheckpointError` naming the first loaded tensor that holds NaN or an infinity.

    One pass over the loaded parameters and buffers, tensor by tensor and in place (no copy of the
    weights); bounded chunks keep the temporary mask small even for an 8B embedding. Parameters not
    materialised (the meta device, disk offload) are skipped.
    """
    import torch

    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        flat = tensor.detach().reshape(-1)
        if not all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(_FINITE_CHUNK)):
            raise CheckpointError(
                f"checkpoint {source}: tensor {name} holds NaN or infinite values; the weights are corrupt "
                "(or were saved after training diverged): re-download the checkpoint or load an earlier one"
            )


def raise_on_key_mismatch(source: str | os.PathLike, info: dict, architecture: str = "LLaDA") -> None:
    """Raise naming the offending keys when a load left keys missing or unexpected."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in (info.get(kind) or []))
        if keys:
            shown = ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8})" if len(keys) > 8 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not match the {architecture} architecture of its config.json: "
            + "; ".join(problems)
        )
