"""Token batches in and out: prompt rows from tensors or lists, padding, compaction, generated ids."""

import pytest
import torch

from flexretrofit.sampling.sequences import GenerationOutput, as_token_rows, compact_rows, pad_rows


def test_rows_from_tensors_lists_and_single_prompts():
    ids = torch.tensor([[9, 9, 5, 6], [7, 8, 3, 9]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])  # left- and right-padded rows
    assert [r.tolist() for r in as_token_rows(ids, mask)] == [[5, 6], [7, 8, 3]]
    assert [r.tolist() for r in as_token_rows(ids)] == [[9, 9, 5, 6], [7, 8, 3, 9]]
    assert [r.tolist() for r in as_token_rows([[1, 2], torch.tensor([3]), []])] == [[1, 2], [3], []]
    assert [r.tolist() for r in as_token_rows([4, 5, 6])] == [[4, 5, 6]]
    assert [r.tolist() for r in as_token_rows(torch.tensor([4, 5]))] == [[4, 5]]


def test_rows_reject_mismatched_masks_and_masks_with_lists():
    with pytest.raises(ValueError, match="must match input_ids"):
        as_token_rows(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match="only accepted with a"):
        as_token_rows([[1, 2]], torch.ones(1, 2))


def test_pad_and_compact_rows():
    ids, lengths = pad_rows([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_token_id=0, width=5)
    assert ids.tolist() == [[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]] and lengths.tolist() == [3, 1]
    keep = torch.tensor([[True, False, True, False, False], [False, True, True, True, False]])
    values = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    compacted, kept = compact_rows(values, keep, pad_token_id=0)
    assert compacted.tolist() == [[1, 3, 0], [7, 8, 9]] and kept.tolist() == [2, 3]


def test_generated_ids_are_taken_by_position_between_prompt_and_suffix():
    output = GenerationOutput(
        sequences=torch.tensor([[1, 2, 30, 31, 7, 0], [1, 40, 41, 42, 43, 8]]),
        lengths=torch.tensor([5, 6]),
        prompt_lengths=torch.tensor([2, 1]),
        suffix_lengths=torch.tensor([1, 1]),
    )
    assert output.generated_ids() == [[30, 31], [40, 41, 42, 43]]


def test_a_tokenizer_encoding_is_taken_apart_with_its_padding():
    from transformers import BatchEncoding

    padded = BatchEncoding({"input_ids": [[5, 6, 1], [7, 1, 1]], "attention_mask": [[1, 1, 0], [1, 0, 0]]})
    assert [r.tolist() for r in as_token_rows(padded)] == [[5, 6], [7]]
    left = BatchEncoding(
        {
            "input_ids": torch.tensor([[1, 5, 6], [1, 1, 7]]),
            "attention_mask": torch.tensor([[0, 1, 1], [0, 0, 1]]),
        }
    )
    assert [r.tolist() for r in as_token_rows(left)] == [[5, 6], [7]]
    assert [r.tolist() for r in as_token_rows({"input_ids": [4, 5], "attention_mask": [1, 1]})] == [[4, 5]]
    with pytest.raises(ValueError, match="already carries its attention_mask"):
        as_token_rows(left, torch.ones(2, 3))
    with pytest.raises(TypeError, match="mapping without 'input_ids'"):
        as_token_rows({"ids": [1, 2]})


@pytest.mark.parametrize("text", ["The quick brown", ["a prompt", "another"], [[1, 2], "mixed"]])
def test_text_is_refused_with_what_to_do(text):
    with pytest.raises(TypeError, match=r"input_ids holds text; tokenize it first .*generate_text"):
        as_token_rows(text)
