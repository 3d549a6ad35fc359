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
