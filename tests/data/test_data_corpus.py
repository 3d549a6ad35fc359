"""Corpus loading, document chunking and mixtures (local files only; the hub is never contacted)."""

import json

import datasets
import huggingface_hub.constants
import pytest

from flexretrofit.data.corpus import (
    DocumentChunker,
    TextSource,
    chunk_documents,
    chunk_token_ids,
    load_chunked_mixture,
    load_text_dataset,
    mix_datasets,
    published_transfer_mix,
)
from flexretrofit.testing import build_tiny_tokenizer

DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog. " * 12
    + "A masked diffusion model fills in missing tokens!",
    "Short one.",
    "def add(a, b):\n    return a + b\n\n" * 9,
    "x" * 300,  # no sentence end and no newline: only hard cuts
    "Question: how many clips? Answer: 72. Then 48 / 2 = 24.\nDone? Yes.\n" * 6,
    "",
    "Tiny",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture()
def jsonl_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": doc, "id": i}) + "\n" for i, doc in enumerate(DOCUMENTS)))
    return path


def _regroup(chunks, documents_ids):
    """Assign consecutive chunks to documents; fails if a chunk does not lie inside one document."""
    position = 0
    for doc_ids in documents_ids:
        rebuilt = []
        while len(rebuilt) < len(doc_ids):
            assert position < len(chunks), "ran out of chunks before the document was complete"
            rebuilt.extend(chunks[position])
            position += 1
        assert rebuilt == doc_ids, "a chunk crosses a document border or reorders tokens"
    assert position == len(chunks)


def test_chunks_stay_inside_documents_and_respect_max_length(tokenizer, jsonl_file):
    max_length = 24
    dataset = chunk_documents(load_text_dataset(str(jsonl_file)), tokenizer, max_length)
    assert dataset.column_names == ["input_ids", "prompt_mask", "length"]
    chunks = dataset["input_ids"]
    assert all(1 <= len(chunk) <= max_length for chunk in chunks)
    assert dataset["length"] == [len(chunk) for chunk in chunks]
    assert not any(any(mask) for mask in dataset["prompt_mask"])
    documents_ids = [tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in DOCUMENTS]
    _regroup(chunks, [ids for ids in documents_ids if ids])
    # Several documents need several chunks, and no chunk holds two documents' worth of tokens.
    assert len(chunks) > len(DOCUMENTS)


def test_cuts_prefer_boundaries_then_hard_cut():
    ids = list(range(30))
    chunks = chunk_token_ids(ids, 10, boundary_ids={7, 17}, boundary_window=4)
    assert chunks == [list(range(0, 8)), list(range(8, 18)), list(range(18, 28)), [28, 29]]
    # A boundary outside the window is ignored: hard cut at the limit.
    assert chunk_token_ids(ids, 10, boundary_ids={3}, boundary_window=4)[0] == list(range(10))
    # Short tails are dropped.
    assert chunk_token_ids(ids, 10, boundary_ids={7, 17}, boundary_window=4, min_length=3)[-1] == list(
        range(18, 28)
    )


def test_text_chunks_end_at_sentence_or_line_ends(tokenizer):
    chunker = DocumentChunker(tokenizer, 32, boundary_window=16)
    document = DOCUMENTS[4]
    chunks = chunker.chunk(document)
    assert len(chunks) > 2
    for chunk in chunks[:-1]:
        assert chunk[-1] in chunker.boundary_ids
        assert tokenizer.decode(chunk).rstrip(" ").endswith(("\n", ".", "?"))


def test_min_length_and_bos(tokenizer, jsonl_file):
    dataset = chunk_documents(load_text_dataset(jsonl_file), tokenizer, 16, min_length=6, add_bos=True)
    assert all(7 <= n <= 16 for n in dataset["length"])  # BOS + at least 6 text tokens
    for ids, mask in zip(dataset["input_ids"], dataset["prompt_mask"]):
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
        assert mask == [True] + [False] * (len(ids) - 1)


def test_streaming_gives_the_same_chunks(tokenizer, jsonl_file):
    eager = chunk_documents(load_text_dataset(jsonl_file), tokenizer, 20)
    stream = chunk_documents(load_text_dataset(jsonl_file, streaming=True), tokenizer, 20)
    assert isinstance(stream, datasets.IterableDataset)
    assert [row["input_ids"] for row in stream] == eager["input_ids"]


def test_text_files_are_one_document_each(tokenizer, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("first line\nsecond line\n")
    (tmp_path / "docs" / "b.txt").write_text("other file")
    dataset = load_text_dataset(tmp_path / "docs")
    assert sorted(dataset["text"]) == ["first line\nsecond line\n", "other file"]


def test_missing_local_files_are_named(tmp_path, jsonl_file):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_text_dataset([jsonl_file, missing])
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        load_text_dataset(str(tmp_path / "*.parquet"))


def test_unreachable_hub_dataset_says_to_pass_local_files(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="local files"):
        load_text_dataset("nobody-here/no-such-corpus")


def test_bad_arguments_raise_clear_errors(tokenizer, jsonl_file):
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        chunk_token_ids([1, 2, 3], 0)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        DocumentChunker(tokenizer, 0)
    with pytest.raises(ValueError, match="min_length"):
        chunk_token_ids([1, 2, 3], 4, min_length=5)
    with pytest.raises(KeyError, match="content"):
        load_text_dataset(jsonl_file, text_field="content")


def test_published_mix_is_a_descriptor():
    sources = published_transfer_mix()
    assert [s.path for s in sources] == ["Skylion007/openwebtext", "EleutherAI/proof-pile-2"]
    assert all(isinstance(s, TextSource) and s.text_field == "text" and s.weight > 0 for s in sources)


def test_mixture_follows_weights():
    big = datasets.Dataset.from_dict({"source": ["a"] * 2000})
    small = datasets.Dataset.from_dict({"source": ["b"] * 2000})
    mixed = mix_datasets([big, small], [4.0, 1.0], seed=0, stopping_strategy="first_exhausted")
    head = mixed.select(range(1000))["source"]
    assert 0.75 < head.count("a") / len(head) < 0.85
    with pytest.raises(ValueError, match="one weight per dataset"):
        mix_datasets([big, small], [1.0])


def test_chunked_mixture_of_local_sources(tokenizer, tmp_path):
    for name, word in (("a", "alpha"), ("b", "beta")):
        rows = [json.dumps({"body": f"{word} {i}. " * 3}) for i in range(300)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    sources = [
        TextSource(str(tmp_path / "a.jsonl"), text_field="body", weight=3.0),
        TextSource((str(tmp_path / "b.jsonl"),), text_field="body", weight=1.0),
    ]
    mixed = load_chunked_mixture(sources, tokenizer, 64, seed=0, stopping_strategy="first_exhausted")
    assert mixed.column_names == ["input_ids", "prompt_mask", "length"]
    head = [tokenizer.decode(ids) for ids in mixed.select(range(200))["input_ids"]]
    share = sum(text.startswith("alpha") for text in head) / len(head)
    assert 0.65 < share < 0.85
    assert all(text.startswith(("alpha", "beta")) for text in head)


# -- data mistakes: one line naming the file (and line), raised before anything is tokenised ---------


def test_an_empty_corpus_file_is_named(tmp_path):
    from flexretrofit.data import DataError

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    for name in ("empty", "blank"):
        for streaming in (False, True):
            with pytest.raises(DataError, match=f"data file .*{name}.jsonl (is empty|holds only blank)"):
                load_text_dataset(tmp_path / f"{name}.jsonl", streaming=streaming)


@pytest.mark.parametrize("peek", [100, 2])  # found up-front, or by `datasets` and then located
def test_a_malformed_jsonl_line_is_named_with_its_line_number(tmp_path, jsonl_file, monkeypatch, peek):
    import flexretrofit.data.corpus as corpus

    monkeypatch.setattr(corpus, "PEEK_RECORDS", peek)
    lines = jsonl_file.read_text().splitlines()
    lines.insert(3, '{"text": "an unfinished record')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(corpus.DataError, match=r"data file .*bad.jsonl line 4 is not valid JSON") as error:
        load_text_dataset(bad)
    assert "\n" not in str(error.value)
    if peek > 3:  # a stream is checked up-front the same way
        with pytest.raises(corpus.DataError, match="bad.jsonl line 4"):
            load_text_dataset(bad, streaming=True)
