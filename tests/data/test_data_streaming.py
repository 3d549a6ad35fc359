"""Streamed batches: lazy reading, length grouping per shuffle buffer, disjoint ranks, exact resume."""

import json
import random

import datasets
import pytest
import torch

from flexretrofit.data import LengthGroupedStream, TextSource, load_chunked_mixture, padding_efficiency
from flexretrofit.testing import build_tiny_tokenizer

WORDS = "the cat sat on a mat and ran far away . dogs bark loud ! birds sing\n".split(" ")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def write_corpus(folder, name, num_files, docs_per_file, seed=0):
    """JSONL files of distinct documents (each starts with its own name and number)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(num_files):
        with open(folder / f"{name}{f}.jsonl", "w") as out:
            for i in range(docs_per_file):
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 50)))
                out.write(json.dumps({"text": f"{name} {f} {i} {words}"}) + "\n")
    return str(folder / f"{name}*.jsonl")


def _generate(lengths, fail_after):
    for i, n in enumerate(lengths):
        if fail_after is not None and i >= fail_after:
            raise RuntimeError(f"read sample {i}, past the first {fail_after}")
        yield {"input_ids": [i % 50 + 1] * n, "prompt_mask": [False] * n, "length": n}


def samples_stream(lengths, fail_after=None):
    """A stream of samples with the given lengths; reading sample ``fail_after`` raises."""
    kwargs = {"lengths": tuple(lengths), "fail_after": fail_after}  # a list would be split into shards
    return datasets.IterableDataset.from_generator(_generate, gen_kwargs=kwargs)


def ids(batches):
    return [[sample["input_ids"].tolist() for sample in batch] for batch in batches]


def lognormal_lengths(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.exp(4.0 + torch.randn(count, generator=generator)).clamp(4, 512).long().tolist()


def test_batches_come_from_the_stream_without_reading_it_all():
    stream = LengthGroupedStream(
        samples_stream(range(1, 1001), fail_after=64), 8, shuffle_buffer=32, mega_batch_factor=4
    )
    batches = iter(stream)
    first_window = [next(batches) for _ in range(4)]  # 32 samples: the first window
    second_window = [next(batches) for _ in range(4)]  # the next 32: 64 read, none past them
    read = sorted(len(s["input_ids"]) for batch in first_window for s in batch)
    assert read == list(range(1, 33))
    assert sorted(len(s["input_ids"]) for b in second_window for s in b) == list(range(33, 65))
    assert all(len(batch) == 8 for batch in first_window + second_window)
    with pytest.raises(RuntimeError, match="past the first 64"):
        next(batches)  # a third window needs sample 64


def test_length_grouping_inside_the_buffer_reduces_padding():
    lengths = lognormal_lengths(2048)

    def efficiency(mega_batch_factor):
        stream = LengthGroupedStream(
            samples_stream(lengths), 16, shuffle_buffer=512, mega_batch_factor=mega_batch_factor
        )
        batches = ids(stream)
        flat = [len(sample) for batch in batches for sample in batch]
        index = iter(range(len(flat)))
        return padding_efficiency(flat, [[next(index) for _ in batch] for batch in batches])

    grouped, ungrouped = efficiency(32), efficiency(1)
    assert grouped > 0.85
    assert grouped > 1.8 * ungrouped


def test_a_pass_uses_every_sample_once_then_the_next_pass_reshuffles():
    lengths = list(range(1, 101))  # 3 full windows of 32 and a short one of 4 (less than a batch)
    stream = LengthGroupedStream(samples_stream(lengths), 8, shuffle_buffer=32, mega_batch_factor=2)
    first = ids(stream)
    assert stream.epoch == 1 and len(first) == 12
    used = sorted(len(s) for batch in first for s in batch)
    assert used == list(range(1, 97))  # the incomplete last batch of the stream is dropped
    second = ids(stream)
    assert second != first and sorted(len(s) for b in second for s in b) == used


def share(tokenizer, source, rank=0, world_size=1):
    """Every sample one rank reads in a pass over ``source`` (batches of one: nothing dropped)."""
    chunks = load_chunked_mixture([TextSource(source)], tokenizer, 24, streaming=True)
    stream = LengthGroupedStream(chunks, 1, shuffle_buffer=64, rank=rank, world_size=world_size)
    return [tuple(sample["input_ids"].tolist()) for batch in stream for sample in batch]


def test_ranks_read_disjoint_shares_of_the_stream(tokenizer, tmp_path):
    for num_files, world_size in [(2, 2), (1, 3)]:  # whole files per rank / every third sample
        source = write_corpus(tmp_path / f"c{num_files}", "doc", num_files, 40)
        everything = share(tokenizer, source)
        shares = [share(tokenizer, source, rank, world_size) for rank in range(world_size)]
        assert all(len(part) > 0 for part in shares)
        for a in range(world_size):
            for b in range(a + 1, world_size):
                assert not set(shares[a]) & set(shares[b]), (num_files, a, b)
        assert sorted(sum(shares, [])) == sorted(everything)


def mixture(tokenizer, root):
    """Two interleaved sources (probabilistic mixing), chunked on the fly."""
    sources = [
        TextSource(write_corpus(root, "web", 2, 30, seed=1), weight=0.7),
        TextSource(write_corpus(root, "math", 1, 20, seed=2), weight=0.3),
    ]
    return load_chunked_mixture(sources, tokenizer, 16, streaming=True, seed=5)


def test_resume_gives_exactly_the_batches_of_an_uninterrupted_run(tokenizer, tmp_path):
    def make():
        return LengthGroupedStream(
            mixture(tokenizer, tmp_path), 4, shuffle_buffer=24, mega_batch_factor=3, seed=7
        )

    def take(stream, count):
        batches, iterator = [], iter(stream)
        while len(batches) < count:
            batch = next(iterator, None)
            if batch is None:  # end of a pass
                iterator = iter(stream)
                continue
            batches.append(batch)
        return ids(batches)

    reference = make()
    per_pass = len(ids(reference))
    assert per_pass > 6
    straight = take(make(), 2 * per_pass + 3)  # crosses windows and a pass boundary
    for cut in (1, 5, 6, per_pass, per_pass + 4):
        first = make()
        head = take(first, cut)
        state = json.loads(json.dumps(first.state_dict()))  # what the checkpoint stores
        resumed = make()
        resumed.load_state_dict(state)
        assert head + take(resumed, len(straight) - cut) == straight, cut

    other = LengthGroupedStream(
        mixture(tokenizer, tmp_path), 8, shuffle_buffer=24, mega_batch_factor=3, seed=7
    )
    with pytest.raises(ValueError, match="batch_size=4 but this stream has batch_size=8"):
        other.load_state_dict(state)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of the batch size 8"):
        LengthGroupedStream(samples_stream([3] * 10), 8, shuffle_buffer=20)
    with pytest.raises(TypeError, match="no state_dict"):
        LengthGroupedStream([{"input_ids": [1]}], 1, shuffle_buffer=1)
    too_short = LengthGroupedStream(samples_stream([3] * 5), 8, shuffle_buffer=16)
    with pytest.raises(ValueError, match="holds 5 samples, fewer than one batch of 8"):
        next(iter(too_short))


def test_a_malformed_record_met_in_a_stream_is_one_line(tmp_path):
    from flexretrofit.data import DataError

    path = tmp_path / "corpus.jsonl"
    good = "".join(json.dumps({"input_ids": [1, 2, 3], "length": 3}) + "\n" for _ in range(8))
    path.write_text(good + '{"input_ids": [1, 2\n' + good)
    stream = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
    with pytest.raises(
        DataError, match=r"a record of the streamed data could not be read .*resume_from=latest"
    ):
        list(LengthGroupedStream(stream, 4, shuffle_buffer=8))
