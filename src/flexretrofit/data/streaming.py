"""Length-grouped batches from a stream: read lazily, group one shuffle buffer at a time, resume exactly.

A streamed corpus (``datasets`` ``IterableDataset``, e.g. :func:`~flexretrofit.data.load_chunked_mixture`
with ``streaming=True``) is tokenised as it is read and has no length, so the whole-dataset
:class:`~flexretrofit.data.batching.LengthGroupedBatchSampler` cannot run on it. :class:`LengthGroupedStream`
applies the same grouping (:func:`~flexretrofit.data.batching.length_grouped_batches`) to one *window* of
``shuffle_buffer`` samples at a time: read the next window, cut it into length-grouped batches in a seeded
random order, hand them out, read the next window. Only one window is ever in memory, and nothing is read
before the first batch is asked for.

Exact resume: a window is a pure function of where it starts in the stream and of ``(seed, window)``, so
the state is small: the stream's own state at the start of the current window
(``IterableDataset.state_dict()``), the window counter and the batches already handed out of it. Resuming
re-reads that one window and skips those batches.

Ranks: with ``world_size > 1`` the stream is split with :func:`datasets.distributed.split_dataset_by_node`
(whole files per rank when their count divides by ``world_size``, otherwise every ``world_size``-th
sample), so every rank reads and tokenises a disjoint share of the stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node

from flexretrofit.data.batching import length_grouped_batches
from flexretrofit.data.corpus import DataError
from flexretrofit.utils import check_rank, derive_seed

_SETTINGS = ("seed", "batch_size", "shuffle_buffer", "mega_batch_factor", "rank", "world_size")


class LengthGroupedStream:
    """Batches of similar-length samples read lazily from a stream, one shuffle buffer at a time.

    Iterating yields the rest of the current pass over the stream (lists of ``batch_size`` samples
    ``{"input_ids": [n] int32, "prompt_mask": [n] bool}``), then moves to the next pass, like
    :class:`~flexretrofit.data.batching.LengthGroupedBatchSampler` does with epochs. The last window of a
    pass may be short; its incomplete batch is dropped. :meth:`state_dict` / :meth:`load_state_dict` save
    and restore the position.

    Args:
        stream: samples with ``input_ids``, ``prompt_mask`` (optional) and ``length`` (optional): a
            ``datasets.IterableDataset`` (anything with ``state_dict``/``load_state_dict`` on one process).
        batch_size: samples per batch on this rank.
        shuffle_buffer: samples per window (the memory held), a multiple of ``batch_size``.
        mega_batch_factor: batches length-sorted together inside a window (1: no length grouping).
        seed: the shuffling seed. It is the same on every rank on purpose: ranks then take batches of the
            same length rank at the same step, so no rank waits long on a slower one.
        rank, world_size: this process among the data-parallel processes.
    """

    def __init__(
        self,
        stream: Any,
        batch_size: int,
        *,
        shuffle_buffer: int,
        mega_batch_factor: int = 50,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if shuffle_buffer < batch_size or shuffle_buffer % batch_size:
            raise ValueError(
                f"shuffle_buffer={shuffle_buffer} must be a positive multiple of the batch size {batch_size} "
                f"(e.g. {batch_size * max(1, shuffle_buffer // batch_size)})."
            )
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be >= 1, got {mega_batch_factor}.")
        check_rank(rank, world_size)
        if not all(callable(getattr(stream, name, None)) for name in ("state_dict", "load_state_dict")):
            raise TypeError(
                f"{type(stream).__name__} has no state_dict/load_state_dict, so its position cannot be saved; "
                "pass a datasets.IterableDataset (load_dataset(..., streaming=True))."
            )
        if world_size > 1:
            if not isinstance(stream, datasets.IterableDataset):
                raise TypeError("splitting a stream over ranks needs a datasets.IterableDataset.")
            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = stream
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.mega_batch_factor = mega_batch_factor
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0  # passes over the stream
        self.window = 0  # windows read so far, over all passes (seeds each window's order)
        self.position = 0  # batches of the current window already handed out
        self._window_start: dict | None = None  # stream state where the window starts; None: pass start
        self._reset_reading()

    def _reset_reading(self) -> None:
        self._iterator: Iterator[Mapping[str, Any]] | None = None
        self._batches: list[list[dict[str, torch.Tensor]]] | None = None
        self._next_start: dict | None = None
        self._last_window = False

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        while True:
            if self._batches is None:
                self._read_window()
            while self.position < len(self._batches):
                batch = self._batches[self.position]
                self.position += 1
                yield batch
            last = self._last_window
            self.window, self.position, self._window_start = self.window + 1, 0, self._next_start
            self._batches = None
            if last:  # the stream ran out: the next iteration starts the next pass
                self.epoch, self._window_start = self.epoch + 1, None
                self._reset_reading()
                return

    def _read_window(self) -> None:
        """Read the current window from ``_window_start`` and cut it into batches."""
        if self._iterator is None:
            if hasattr(self.stream, "set_epoch"):
                self.stream.set_epoch(self.epoch)
            if self._window_start is not None:
                self.stream.load_state_dict(self._window_start)
            self._iterator = iter(self.stream)
        try:
            samples = [_sample(row) for row in islice(self._iterator, self.shuffle_buffer)]
        except DataError:
            raise
        except (ValueError, KeyError, datasets.exceptions.DatasetGenerationError) as error:
            # A malformed record deep in a stream shows only when it is read: one line, not a traceback.
            cause = " ".join(str(error).split()) or type(error).__name__
            raise DataError(
                f"a record of the streamed data could not be read (pass {self.epoch}, window {self.window}): "
                f"{cause}; fix or remove that record, then rerun with train.resume_from=latest."
            ) from error
        self._last_window = len(samples) < self.shuffle_buffer
        self._next_start = None if self._last_window else self.stream.state_dict()
        if self._last_window and self._window_start is None and len(samples) < self.batch_size:
            raise ValueError(
                f"the stream holds {len(samples)} samples, fewer than one batch of {self.batch_size} on rank "
                f"{self.rank}; give more data or a smaller batch."
            )
        generator = torch.Generator().manual_seed(derive_seed(int(self.seed), self.window))
        lengths = [len(sample["input_ids"]) for sample in samples]
        batches = length_grouped_batches(lengths, self.batch_size, self.mega_batch_factor, generator)
        self._batches = [[samples[i] for i in batch] for batch in batches]
        if self.position > len(self._batches):
            raise ValueError(
                f"the stream state says {self.position} batches of window {self.window} were used, but the "
                f"window holds {len(self._batches)}; resume on the same data."
            )

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands (JSON-serialisable): ``epoch``, ``window``, ``position`` (batches of the
        window already yielded), ``window_start`` (the stream's state at the window's start) and the
        settings that must match on resume."""
        state = {key: getattr(self, key) for key in _SETTINGS}
        state.update(
            epoch=self.epoch, window=self.window, position=self.position, window_start=self._window_start
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next batch is the one after the last saved one."""
        for key in _SETTINGS:
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"stream state has {key}={state[key]} but this stream has {key}={getattr(self, key)}; "
                    "resume with the same data settings, batch size and number of processes."
                )
        self.epoch, self.window = int(state["epoch"]), int(state["window"])
        self.position, self._window_start = int(state["position"]), state["window_start"]
        self._reset_reading()


def _sample(row: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """One stream row as compact tensors (a window of Python int lists would take ~9x the memory)."""
    sample = {"input_ids": torch.tensor(row["input_ids"], dtype=torch.int32)}
    if row.get("prompt_mask") is not None:
        sample["prompt_mask"] = torch.tensor(row["prompt_mask"], dtype=torch.bool)
    return sample
