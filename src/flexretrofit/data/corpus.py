"""Text corpora for the retrofit: load a dataset, cut each document into chunks, mix several sources.

One chunk is one training sample and never holds text from two documents: FlexMDM learns sequence
lengths through its insertion head, so packing documents together would teach it wrong lengths
(method doc, section 5). Batches of similar length come from
:class:`~flexretrofit.data.batching.LengthGroupedBatchSampler` instead of packing.

Every sample has ``input_ids`` (list of ids), ``prompt_mask`` (list of bools, True at protected
tokens: none for plain text, the optional BOS) and ``length``.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

AnyDataset = datasets.Dataset | datasets.IterableDataset

# File suffix -> `datasets` builder. Compressed variants (.jsonl.gz, .json.zst, ...) map like their base.
_BUILDERS = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".zst", ".bz2", ".xz", ".zip")
_SENTENCE_ENDS = (".", "!", "?", "\u3002", "\uff01", "\uff1f")
_CLOSERS = "\"')]}\u201d\u2019\u00bb"


# Records of each JSONL file read before loading: enough to catch a wrong file, cheap for a huge corpus.
PEEK_RECORDS = 100


class DataError(ValueError):
    """A data file or record that cannot be used: one line naming the file (and line) and what to do."""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _suffix(path: str) -> str:
    """The data suffix of ``path`` ignoring a compression suffix: ``a.jsonl.gz`` -> ``.jsonl``."""
    name = path.lower()
    for compression in _COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
            break
    return os.path.splitext(name)[1]


def _looks_local(source: str | os.PathLike | Sequence[str | os.PathLike]) -> bool:
    if not isinstance(source, str):
        return True  # a Path or a list of paths
    return (
        os.path.exists(source)
        or _suffix(source) in _BUILDERS
        or any(char in source for char in "*?[")
        or source.startswith((".", "/", "~"))
    )


def resolve_data_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand local files, directories (their data files, recursively) and globs into a sorted file list.

    Raises:
        FileNotFoundError: naming every path that does not exist or glob that matches nothing.
        ValueError: when the files are of different or unsupported types.
    """
    entries = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not entries:
        raise ValueError("no data files given; pass a file, a directory, a glob or a list of files.")
    files, missing = [], []
    for entry in entries:
        entry = os.path.expanduser(os.fspath(entry))
        if os.path.isdir(entry):
            found = sorted(
                str(p) for p in Path(entry).rglob("*") if p.is_file() and _suffix(p.name) in _BUILDERS
            )
            if not found:
                missing.append(f"{entry} (a directory with no {'/'.join(_BUILDERS)} files)")
            files.extend(found)
        elif any(char in entry for char in "*?["):
            found = sorted(glob.glob(entry, recursive=True))
            if not found:
                missing.append(f"{entry} (the glob matches nothing)")
            files.extend(found)
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            missing.append(entry)
    if missing:
        raise FileNotFoundError(
            f"local data file(s) not found: {', '.join(missing)}. Check the paths (relative paths resolve "
            f"from {os.getcwd()}), or pass a hub dataset name instead."
        )
    suffixes = {_suffix(f) for f in files}
    unsupported = suffixes - set(_BUILDERS)
    if unsupported:
        raise ValueError(
            f"unsupported data file type(s) {sorted(unsupported)}; use {', '.join(_BUILDERS)} "
            "(optionally compressed: .gz, .zst, ...)."
        )
    if len({_BUILDERS[s] for s in suffixes}) > 1:
        raise ValueError(f"data files mix several formats ({sorted(suffixes)}); load each format separately.")
    return files


def _jsonl_records(path: str, limit: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed record)`` of a plain ``.jsonl`` file, blank lines skipped.

    Raises:
        DataError: a line that is not a JSON object, naming the file and the line.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        numbered = ((n, line) for n, line in enumerate(f, 1) if line.strip())
        for number, line in itertools.islice(numbered, limit):
            try:
                record = json.loads(line)
            except ValueError as error:
                raise DataError(
                    f"data file {path} line {number} is not valid JSON ({error}); fix or remove that line."
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"data file {path} line {number} is a JSON {type(record).__name__}, not an object; each "
                    'line of a .jsonl file is one record {"field": value, ...}.'
                )
            yield number, record


def check_data_files(
    files: Sequence[str],
    record_problem: Callable[[Mapping[str, Any]], str | None] | None = None,
    limit: int | None = PEEK_RECORDS,
) -> None:
    """Cheap checks before any loading: no file is empty, and the first ``limit`` records of each plain
    ``.jsonl`` file parse (and pass ``record_problem``, which says what is wrong with a record, or None).

    Raises:
        DataError: naming the file, the line and the fix.
    """
    for path in files:
        if os.path.getsize(path) == 0:
            raise DataError(
                f"data file {path} is empty; write records into it or remove it from the sources."
            )
        if not path.lower().endswith(".jsonl"):
            continue  # compressed or other formats: read by `datasets` only
        found = False
        for number, record in _jsonl_records(path, limit):
            found = True
            problem = record_problem(record) if record_problem is not None else None
            if problem:
                raise DataError(f"data file {path} line {number}: {problem}.")
        if not found:
            raise DataError(f"data file {path} holds only blank lines; write records into it or remove it.")


def _unreadable(files: Sequence[str], error: BaseException) -> DataError:
    """The one line for a file `datasets` could not read: the first bad JSONL line when there is one."""
    for path in files:
        if path.lower().endswith(".jsonl"):
            for _ in _jsonl_records(path):  # raises DataError at the first bad line
                pass
    cause = " ".join(str(error.__cause__ or error).split())
    return DataError(f"could not read data file(s) {', '.join(files[:3])}: {cause}; fix or replace the file.")


def load_text_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    text_field: str = "text",
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    record_problem: Callable[[Mapping[str, Any]], str | None] | None = None,
    **load_kwargs: Any,
) -> AnyDataset:
    """Load a text dataset from the hub or from local files, checking that ``text_field`` exists.

    Args:
        source: a hub dataset name (``"Skylion007/openwebtext"``), or local data: a file, a directory,
            a glob or a list of files (``.jsonl``/``.json``/``.txt``/``.parquet``, optionally compressed).
            ``.txt`` files are read one document per file unless ``sample_by="line"``/``"paragraph"``
            is passed.
        text_field: the column holding the document text (``"text"`` for ``.txt`` files).
        split: the split to load (local files are all in ``"train"``).
        name: the hub configuration name (``"default"`` for Proof-Pile-2).
        streaming: return a lazily read ``IterableDataset``.
        record_problem: checks the first records of local ``.jsonl`` files before loading (see
            :func:`check_data_files`).
        load_kwargs: passed on to :func:`datasets.load_dataset`.

    Raises:
        FileNotFoundError: a local path does not exist.
        DataError: a local file is empty, or a record cannot be read (the file and line named).
        ConnectionError: a hub dataset cannot be reached (offline mode, no network).
        KeyError: the dataset has no ``text_field`` column.
    """
    if _looks_local(source):
        files = resolve_data_files(source)
        check_data_files(files, record_problem, PEEK_RECORDS)
        builder = _BUILDERS[_suffix(files[0])]
        if builder == "text":
            load_kwargs.setdefault("sample_by", "document")
        try:
            dataset = datasets.load_dataset(
                builder, data_files=files, split=split, streaming=streaming, **load_kwargs
            )
        except datasets.exceptions.DatasetGenerationError as error:
            raise _unreadable(files, error) from error
    else:
        try:
            dataset = datasets.load_dataset(source, name, split=split, streaming=streaming, **load_kwargs)
        except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
            offline = (
                " (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
            )
            raise ConnectionError(
                f"could not load hub dataset {source!r}{offline}: {error}. Download it where the hub is "
                "reachable and pass the local files instead (a .jsonl/.json/.txt/.parquet file, a directory "
                "or a glob), e.g. load_text_dataset('data/openwebtext/*.parquet')."
            ) from error
    columns = dataset.column_names
    if columns is not None and text_field not in columns:
        raise KeyError(
            f"dataset {source!r} has no column {text_field!r}; its columns are {columns}: pass text_field=."
        )
    return dataset


# ---------------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------------


def boundary_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids of the tokens after which a chunk may end cleanly: tokens ending in a newline or in
    sentence-final punctuation (``. ! ?`` and their CJK forms, optionally followed by closing quotes or
    brackets). Special tokens are excluded."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    boundaries = set()
    for token_id, text in zip(ids, texts):
        stripped = text.rstrip(" \t")
        if stripped.endswith("\n") or stripped.rstrip(_CLOSERS).endswith(_SENTENCE_ENDS):
            boundaries.add(token_id)
    return frozenset(boundaries)


def chunk_token_ids(
    ids: Sequence[int],
    max_length: int,
    *,
    boundary_ids: Collection[int] = (),
    boundary_window: int | None = None,
    min_length: int = 1,
) -> list[list[int]]:
    """Cut one document's ids into consecutive chunks of at most ``max_length`` ids.

    Each cut goes right after the last boundary token (newline, sentence end) among the final
    ``boundary_window`` ids before the limit, and falls back to a hard cut at ``max_length`` when
    there is none. Chunks shorter than ``min_length`` (usually the document's short tail) are dropped.

    Args:
        ids: the document's token ids.
        max_length: the largest chunk, >= 1.
        boundary_ids: ids after which a cut is preferred (see :func:`boundary_token_ids`).
        boundary_window: how far back from the limit to look for a boundary; default ``max_length // 8``.
        min_length: the smallest chunk kept, in ``[1, max_length]``.
    """
    _check_lengths(max_length, min_length)
    window = max(1, max_length // 8) if boundary_window is None else boundary_window
    if not 0 <= window < max_length:
        raise ValueError(f"boundary_window must be in [0, max_length={max_length}), got {window}.")
    chunks, start, n = [], 0, len(ids)
    while n - start > max_length:
        limit = start + max_length
        cut = limit
        for j in range(limit - 1, limit - 1 - window, -1):
            if ids[j] in boundary_ids:
                cut = j + 1
                break
        chunks.append(list(ids[start:cut]))
        start = cut
    chunks.append(list(ids[start:]))
    return [chunk for chunk in chunks if len(chunk) >= min_length]


def _check_lengths(max_length: int, min_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}.")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"min_length must be in [1, max_length={max_length}], got {min_length}.")


class DocumentChunker:
    """Tokenise documents and cut each into samples of at most ``max_length`` tokens (no packing).

    Usable as a batched ``datasets.map`` function: ``{text_field: [doc, ...]}`` ->
    ``{"input_ids": [...], "prompt_mask": [...], "length": [...]}`` with one row per chunk.

    Args:
        tokenizer: the model's tokenizer; documents are tokenised without special tokens.
        max_length: the largest sample, BOS included.
        min_length: drop chunks shorter than this (BOS not counted).
        text_field: the column holding the text.
        boundary_window: see :func:`chunk_token_ids`.
        add_bos: start every chunk with the tokenizer's BOS, marked as prompt (never deleted or masked),
            so generation can start from a one-token sequence.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        *,
        min_length: int = 1,
        text_field: str = "text",
        boundary_window: int | None = None,
        add_bos: bool = False,
    ):
        _check_lengths(max_length, min_length)
        if add_bos and tokenizer.bos_token_id is None:
            raise ValueError(
                "add_bos=True but the tokenizer has no bos_token; set one or pass add_bos=False."
            )
        if add_bos and max_length < 2:
            raise ValueError(f"add_bos=True needs max_length >= 2 (BOS + text), got {max_length}.")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_length = min(min_length, max_length - int(add_bos))
        self.text_field = text_field
        self.boundary_window = boundary_window
        self.add_bos = add_bos
        self.boundary_ids = boundary_token_ids(tokenizer)

    def chunk(self, text: str) -> list[list[int]]:
        """The chunks (lists of ids, BOS included when ``add_bos``) of one document."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return self._chunk_ids(ids)

    def _chunk_ids(self, ids: Sequence[int]) -> list[list[int]]:
        budget = self.max_length - int(self.add_bos)
        window = self.boundary_window
        if window is not None:
            window = min(window, budget - 1)
        chunks = chunk_token_ids(
            ids, budget, boundary_ids=self.boundary_ids, boundary_window=window, min_length=self.min_length
        )
        if self.add_bos:
            chunks = [[self.tokenizer.bos_token_id, *chunk] for chunk in chunks]
        return chunks

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        if self.text_field not in batch:
            raise KeyError(
                f"examples have no field {self.text_field!r} (fields: {list(batch)}); pass text_field=."
            )
        texts = [text or "" for text in batch[self.text_field]]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "prompt_mask": [], "length": []}
        for ids in encoded:
            for chunk in self._chunk_ids(ids):
                out["input_ids"].append(chunk)
                out["prompt_mask"].append([self.add_bos] + [False] * (len(chunk) - 1))
                out["length"].append(len(chunk))
        return out


def chunk_documents(
    dataset: AnyDataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    min_length: int = 1,
    text_field: str = "text",
    boundary_window: int | None = None,
    add_bos: bool = False,
    num_proc: int | None = None,
    map_batch_size: int = 1000,
) -> AnyDataset:
    """Map a text dataset to chunk samples (``input_ids``, ``prompt_mask``, ``length``), one chunk per
    sample, see :class:`DocumentChunker`. Works on map-style and streaming datasets."""
    chunker = DocumentChunker(
        tokenizer,
        max_length,
        min_length=min_length,
        text_field=text_field,
        boundary_window=boundary_window,
        add_bos=add_bos,
    )
    if isinstance(dataset, datasets.IterableDataset):
        # Streaming datasets may not know their columns yet: keep only the text, then replace it.
        dataset = dataset.select_columns([text_field])
        return dataset.map(chunker, batched=True, batch_size=map_batch_size, remove_columns=[text_field])
    if text_field not in dataset.column_names:
        raise KeyError(f"dataset has no column {text_field!r}; its columns are {dataset.column_names}.")
    return dataset.map(
        chunker,
        batched=True,
        batch_size=map_batch_size,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="chunking documents",
    )


# ---------------------------------------------------------------------------------------------
# Mixtures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSource:
    """One corpus of a mixture: where it lives, which column holds the text, its sampling weight.

    ``path`` is a hub dataset name or local data (file, directory, glob, or a list of them); ``name`` is
    the hub configuration; ``weight`` is relative (normalised over the mixture), counted in chunks.
    """

    path: str | tuple[str, ...]
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    weight: float = 1.0
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def load(
        self,
        streaming: bool = False,
        record_problem: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> AnyDataset:
        """The raw text dataset (see :func:`load_text_dataset`)."""
        path = list(self.path) if isinstance(self.path, tuple) else self.path
        return load_text_dataset(
            path,
            text_field=self.text_field,
            split=self.split,
            name=self.name,
            streaming=streaming,
            record_problem=record_problem,
            **self.load_kwargs,
        )


def published_transfer_mix() -> list[TextSource]:
    """The published transfer-learning corpora: OpenWebText + Proof-Pile-2 (method doc, section 5).

    Only a descriptor: nothing is downloaded until a source's ``load`` is called. The published mixing
    ratio is not stated in the method doc; equal weights (in chunks) are the default, change them with
    ``dataclasses.replace(source, weight=...)``. Where the hub is unreachable, swap ``path`` for local files.
    """
    return [
        TextSource("Skylion007/openwebtext", text_field="text", weight=0.5),
        TextSource("EleutherAI/proof-pile-2", name="default", text_field="text", weight=0.5),
    ]


def mix_datasets(
    parts: Sequence[AnyDataset],
    weights: Sequence[float],
    *,
    seed: int = 0,
    stopping_strategy: str = "all_exhausted",
) -> AnyDataset:
    """Interleave datasets, drawing each next sample from part ``i`` with probability ``weights[i] / sum``.

    All parts must be of one kind (all map-style or all streaming) with the same columns.
    ``stopping_strategy="all_exhausted"`` oversamples small parts until every part is used up;
    ``"first_exhausted"`` stops with the first.
    """
    if not parts or len(parts) != len(weights):
        raise ValueError(
            f"need one weight per dataset: got {len(parts)} datasets and {len(weights)} weights."
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}.")
    if len(parts) == 1:
        return parts[0]
    total = float(sum(weights))
    return datasets.interleave_datasets(
        list(parts),
        probabilities=[w / total for w in weights],
        seed=seed,
        stopping_strategy=stopping_strategy,
    )


def load_chunked_mixture(
    sources: Iterable[TextSource],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    min_length: int = 1,
    add_bos: bool = False,
    streaming: bool = False,
    seed: int = 0,
    num_proc: int | None = None,
    stopping_strategy: str = "all_exhausted",
) -> AnyDataset:
    """Load every source, chunk its documents (:func:`chunk_documents`), and mix the chunks by weight."""
    sources = list(sources)
    parts = [
        chunk_documents(
            source.load(streaming=streaming),
            tokenizer,
            max_length,
            min_length=min_length,
            text_field=source.text_field,
            add_bos=add_bos,
            num_proc=None if streaming else num_proc,
        )
        for source in sources
    ]
    return mix_datasets(parts, [s.weight for s in sources], seed=seed, stopping_strategy=stopping_strategy)
