"""Length-grouped, resumable, rank-sharded batches.

Samples are one document chunk each (no packing), so lengths vary widely; batching samples of
similar length keeps padding, and so wasted compute, small. The order is a pure function of
(seed, epoch), so every rank computes the same global batches and takes its own slice, and a
run resumes exactly from (epoch, position).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from flexretrofit.utils import check_rank


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar-length samples in a seeded random order, sliced per rank.

    Per epoch: shuffle all indices with a generator seeded from ``(seed, epoch)``; cut the permutation
    into mega-batches of ``mega_batch_factor * batch_size``; sort each mega-batch by length
    (longest first); cut it into global batches of ``batch_size``; shuffle the batches. Rank ``r``
    gets the contiguous slice ``[r * b, (r + 1) * b)`` of every global batch, ``b = batch_size //
    world_size``, so each rank's micro-batch is itself length-homogeneous. A larger
    ``mega_batch_factor`` groups lengths better and randomises less.

    Iterating yields the rest of the current epoch from ``position``, then moves to the next epoch,
    so ``for epoch ...: for batch in loader`` needs no ``set_epoch`` call. :meth:`state_dict` /
    :meth:`load_state_dict` save and restore ``(epoch, position)``. A ``DataLoader`` with workers
    draws batches ahead of the training loop; to resume exactly, store the number of batches the
    loop consumed as ``position`` (or save the sampler's state with ``num_workers=0``).

    Args:
        lengths: the length of every sample (e.g. a dataset's ``"length"`` column).
        batch_size: the global batch size (all ranks together), divisible by ``world_size``.
        mega_batch_factor: how many batches are length-sorted together (``k``), >= 1.
        seed: the shuffling seed, identical on all ranks.
        rank, world_size: this process's position among the data-parallel processes.
        drop_last: drop the last incomplete global batch; otherwise complete it with samples from the
            start of the epoch's permutation (every rank always gets a full slice).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        mega_batch_factor: int = 50,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        check_rank(rank, world_size)
        if batch_size % world_size:
            raise ValueError(
                f"the global batch_size {batch_size} does not divide by world_size {world_size}; use a multiple "
                f"of {world_size} (e.g. {world_size * max(1, batch_size // world_size)}) so every rank gets the same "
                "number of samples."
            )
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be >= 1, got {mega_batch_factor}.")
        self.lengths = [int(n) for n in lengths]
        if not self.lengths:
            raise ValueError("lengths is empty: the dataset has no samples.")
        if drop_last and len(self.lengths) < batch_size:
            raise ValueError(
                f"{len(self.lengths)} samples make no full global batch of {batch_size}; lower batch_size or "
                "pass drop_last=False."
            )
        self.batch_size = batch_size
        self.mega_batch_factor = mega_batch_factor
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def per_rank_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def __len__(self) -> int:
        """Global batches per epoch (this rank yields one slice of each)."""
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All global batches of ``epoch`` in order (the same on every rank)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches = length_grouped_batches(
            self.lengths, self.batch_size, self.mega_batch_factor, generator, drop_last=self.drop_last
        )
        self._cache = (epoch, batches)
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (a no-op when already in it, so a resumed position survives)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        size = self.per_rank_batch_size
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch[self.rank * size : (self.rank + 1) * size]
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler stands: ``epoch``, ``position`` (global batches already yielded in it), and
        the settings that must match on resume."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "mega_batch_factor": self.mega_batch_factor,
            "num_samples": len(self.lengths),
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (possibly saved with another ``world_size`` or ``rank``)."""
        for key in ("seed", "batch_size", "mega_batch_factor", "num_samples", "drop_last"):
            mine = len(self.lengths) if key == "num_samples" else getattr(self, key)
            if key in state and state[key] != mine:
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has {key}={mine}; resume with the "
                    "same dataset and batching settings."
                )
        if not 0 <= state["position"] <= len(self):
            raise ValueError(f"sampler state position {state['position']} is outside [0, {len(self)}].")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    mega_batch_factor: int,
    generator: torch.Generator,
    *,
    drop_last: bool = True,
) -> list[list[int]]:
    """Indices ``0 .. len(lengths) - 1`` cut into batches of similar length, in a random order.

    Shuffle the indices; cut the permutation into mega-batches of ``mega_batch_factor * batch_size``; sort
    each by length (longest first); cut it into batches of ``batch_size``; shuffle the batches. The last
    incomplete batch is dropped (``drop_last``) or completed from the start of the permutation. Used by
    :class:`LengthGroupedBatchSampler` (a whole dataset per epoch) and by
    :class:`~flexretrofit.data.streaming.LengthGroupedStream` (one shuffle buffer of a stream at a time).
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    mega = mega_batch_factor * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    if batches and len(batches[-1]) < batch_size:
        if drop_last:
            batches.pop()
        else:  # complete the last batch from the start of the permutation, cycling if needed
            missing = batch_size - len(batches[-1])
            batches[-1] = batches[-1] + [order[i % len(order)] for i in range(missing)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def padding_efficiency(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> float:
    """Real tokens / padded tokens over ``batches`` (lists of sample indices), each padded to its longest
    sample: 1.0 means no padding."""
    real = padded = 0
    for batch in batches:
        batch_lengths = [lengths[i] for i in batch]
        if batch_lengths:
            real += sum(batch_lengths)
            padded += len(batch_lengths) * max(batch_lengths)
    if padded == 0:
        raise ValueError("no tokens in the batches: padding efficiency is undefined.")
    return real / padded
