"""Small helpers every layer shares: derived seeds, the rank check of a sharded reader, a module's device."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def derive_seed(*parts: object, bits: int = 63, separator: str = ",") -> int:
    """A ``bits``-bit seed from ``parts`` (joined as text with ``separator``); different parts give unrelated
    seeds, and the same parts give the same seed on every process and machine (BLAKE2b, 8 bytes).

    Each caller keeps its own parts, separator and width so that the seeds it wrote before stay the same.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must lie in [1, 64], got {bits}")
    text = separator.join(str(part) for part in parts)
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return value & ((1 << bits) - 1)


def check_rank(rank: int, world_size: int) -> None:
    """Raise ``ValueError`` unless ``0 <= rank < world_size`` (one line naming both)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
