import pytest

from flexretrofit.evaluation.results import ResultsWriter
from flexretrofit.evaluation.runner import Generation, as_generation, run_resumable


def _score(indices, generations):
    return [
        {"index": index, "text": g.text, "num_tokens": g.num_tokens} for index, g in zip(indices, generations)
    ]


def test_generator_sees_batches_and_rows_come_back_in_id_order(tmp_path):
    batches = []

    def generate(prompts):
        batches.append(list(prompts))
        return [prompt.upper() for prompt in prompts]

    ids = [f"q{i}" for i in range(5)]
    prompts = ["a", "b", "c", "d", "e"]
    with ResultsWriter(tmp_path / "rows.jsonl") as writer:
        rows = run_resumable(ids, prompts, generate, _score, writer, batch_size=2)
    assert batches == [["a", "b"], ["c", "d"], ["e"]]
    assert [row["id"] for row in rows] == ids
    assert [row["text"] for row in rows] == ["A", "B", "C", "D", "E"]


def test_rerun_generates_only_the_missing_items(tmp_path):
    ids, prompts = ["x", "y", "z"], ["1", "2", "3"]
    with ResultsWriter(tmp_path / "rows.jsonl") as writer:
        writer.write({"id": "y", "index": 1, "text": "old", "num_tokens": None})
        seen = []
        progress = []
        rows = run_resumable(
            ids,
            prompts,
            lambda batch: seen.extend(batch) or [Generation(p * 2, num_tokens=2) for p in batch],
            _score,
            writer,
            batch_size=8,
            on_batch=lambda done, total: progress.append((done, total)),
        )
    assert seen == ["1", "3"]
    assert [row["text"] for row in rows] == ["11", "old", "33"]
    assert rows[0]["num_tokens"] == 2
    assert progress == [(3, 3)]


def test_bad_generators_and_inputs_are_clear_errors(tmp_path):
    with ResultsWriter(tmp_path / "rows.jsonl") as writer:
        with pytest.raises(ValueError, match="2 outputs for 3 prompts"):
            run_resumable(["a", "b", "c"], [1, 2, 3], lambda batch: ["x", "y"], _score, writer)
        with pytest.raises(ValueError, match="unique"):
            run_resumable(["a", "a"], [1, 2], lambda batch: batch, _score, writer)
        with pytest.raises(ValueError, match="align"):
            run_resumable(["a"], [1, 2], lambda batch: batch, _score, writer)
        with pytest.raises(TypeError, match="str or Generation"):
            run_resumable(["a"], [1], lambda batch: [42], _score, writer)
        assert len(writer) == 0  # nothing half-written
    assert as_generation("t") == Generation("t", None)
