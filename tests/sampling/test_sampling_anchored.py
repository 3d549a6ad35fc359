"""Anchored infilling: ``infill(segments=...)`` keeps every given segment in place and in order and inserts
only between consecutive segments; ``infill(prefix, suffix)`` is its two-segment spelling."""

import pytest
import torch
from test_sampling_flex import BOS, EOS_PAD, MASK, StubFlexMDM

from flexretrofit.sampling import infill
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm

# Rows with 2, 3 and 4 segments; empty first and last segments are allowed.
ROWS = [
    [[BOS, 5, 6], [7, 8]],
    [[BOS], [9], [10, 11, 12]],
    [[], [13, 14], [15], []],
]


def assert_layout(output, rows):
    """Each final row is seg_0 + gap_1 + seg_1 + ... + gap_k + seg_k, with the gaps from ``middles``."""
    for b, segments in enumerate(rows):
        gaps = output.middles[b]
        assert len(gaps) == len(segments) - 1
        expected = list(segments[0])
        for gap, segment in zip(gaps, segments[1:]):
            assert MASK not in gap and EOS_PAD not in gap
            expected += gap + list(segment)
        n = int(output.lengths[b])
        assert output.sequences[b, :n].tolist() == expected
        assert int(output.prompt_lengths[b]) == len(segments[0])
        assert int(output.suffix_lengths[b]) == len(segments[-1])


def assert_segments_never_split(output, rows):
    """At every step each segment's tokens stay side by side, unchanged, in the order given."""
    positions = []  # per row: per segment, the current positions of its tokens
    for segments in rows:
        start, row_positions = 0, []
        for segment in segments:
            row_positions.append(list(range(start, start + len(segment))))
            start += len(segment)
        positions.append(row_positions)
    for step in output.trace[1:]:
        for b, segments in enumerate(rows):
            row_positions = [
                [int(step.moved_to[b, p]) for p in seg_positions] for seg_positions in positions[b]
            ]
            flat = [p for seg_positions in row_positions for p in seg_positions]
            assert flat == sorted(flat), "segments keep their order"
            for segment, seg_positions in zip(segments, row_positions):
                if segment:
                    first = seg_positions[0]
                    assert seg_positions == list(range(first, first + len(segment))), "a segment stays whole"
                    assert step.sequences[b, seg_positions].tolist() == list(segment)
            positions[b] = row_positions


def test_segments_are_kept_and_gaps_grow_only_between_them():
    stub = StubFlexMDM(gap=2.0)
    output = infill(stub, segments=ROWS, steps=12, max_length=64, return_trace=True)
    assert_layout(output, ROWS)
    assert_segments_never_split(output, ROWS)
    # The stub predicts 2 missing tokens at every slot: every gap receives some, no segment interior does.
    assert all(len(gap) > 0 for row in output.middles for gap in row)
    # Insertions never land at the very start or end when the outer segments are non-empty.
    assert output.sequences[0, :3].tolist() == ROWS[0][0]


def test_no_insertion_outside_the_gaps_even_with_a_large_predicted_gap():
    stub = StubFlexMDM(gap=5.0)
    rows = [[[BOS, 3, 4, 5], [6, 7, 8]]]
    output = infill(stub, segments=rows, steps=8, max_length=64, return_trace=True)
    assert_layout(output, rows)
    n = int(output.lengths[0])
    assert output.sequences[0, :4].tolist() == [BOS, 3, 4, 5]
    assert output.sequences[0, n - 3 : n].tolist() == [6, 7, 8]


def test_each_row_gives_what_it_gives_alone():
    stub = StubFlexMDM(gap=1.5)
    batch = infill(stub, segments=ROWS, steps=10, max_length=64, row_seeds=[3, 4, 5], temperature=1.0)
    for b, segments in enumerate(ROWS):
        alone = infill(stub, segments=[segments], steps=10, max_length=64, row_seeds=[3 + b], temperature=1.0)
        assert alone.middles[0] == batch.middles[b]


def test_prefix_suffix_is_the_two_segment_spelling():
    stub = StubFlexMDM(gap=1.5)
    prefixes, suffixes = [[BOS, 5], [BOS, 6, 7]], [[8], []]
    pair = infill(stub, prefixes, suffixes, steps=10, max_length=64, row_seeds=[1, 2])
    segments = infill(
        stub, segments=[[p, s] for p, s in zip(prefixes, suffixes)], steps=10, max_length=64, row_seeds=[1, 2]
    )
    assert torch.equal(pair.sequences, segments.sequences)
    assert pair.middles == [gaps[0] for gaps in segments.middles]


def test_cap_truncates_insertions_but_keeps_every_segment():
    stub = StubFlexMDM(gap=6.0)
    rows = [[[BOS, 3], [4], [5, 6]]]
    output = infill(stub, segments=rows, steps=6, max_length=9)
    assert int(output.lengths[0]) <= 9
    assert_layout(output, rows)


def test_model_infill_method_on_a_tiny_flexmdm():
    tokenizer = build_tiny_tokenizer()
    model = tiny_flexmdm(tokenizer, seed=0, insertion_head_init=1.5)
    ids = tokenizer(["def f(x):", " return", " x"], add_special_tokens=False)["input_ids"]
    rows = [[ids[0], ids[1], ids[2]], [ids[0], ids[2]]]
    output = model.infill(segments=rows, steps=6, max_length=48)
    forbidden = {tokenizer.mask_token_id, tokenizer.pad_token_id}
    for b, segments in enumerate(rows):
        expected = list(segments[0])
        for gap, segment in zip(output.middles[b], segments[1:]):
            assert not forbidden & set(gap)
            expected += gap + segment
        assert output.sequences[b, : int(output.lengths[b])].tolist() == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(segments=[[[BOS, 5]]]), "two or more token-id sequences"),
        (dict(segments=[[[BOS], [], [5]]]), r"segments\[0\]\[1\] is empty"),
        (dict(segments=[[[], []]]), "no token"),
        (dict(segments=[[[BOS], [MASK]]]), "MASK id"),
        (dict(segments=[[[BOS], "text"]]), "is text"),
        (dict(segments="abc"), "one entry per row"),
        (dict(segments=[[[BOS], [5]]], prefix_ids=[[BOS]], suffix_ids=[[5]]), "not both"),
        (dict(prefix_ids=[[BOS]]), "needs prefix_ids and suffix_ids"),
        (dict(segments=[[[BOS] * 30, [5] * 30]], max_length=40), "above the length cap"),
    ],
)
def test_bad_segments_are_refused_with_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        infill(StubFlexMDM(gap=1.0), steps=4, **kwargs)
    assert "\n" not in str(error.value)


def test_nearest_gap_rounding_inserts_the_rounded_gap_where_stochastic_rounding_varies():
    # The stub predicts 1.4 missing tokens at every eligible slot, at every step.
    stub = StubFlexMDM(gap=1.4)
    rows = [[[BOS, 3], [4], [5]]] * 32
    seeds = list(range(32))
    # Two steps: the first is the last inserting step (each slot gets its whole rounded gap), the second fills.
    kwargs = dict(steps=2, max_length=64, count_distribution="binomial", row_seeds=seeds)
    nearest = infill(stub, segments=rows, gap_rounding="nearest", **kwargs)
    stochastic = infill(stub, segments=rows, **kwargs)
    assert nearest.lengths.tolist() == [4 + 2] * 32, "one token in each of the two gaps"
    assert set(stochastic.lengths.tolist()) == {6, 7, 8}


def test_unknown_gap_rounding_is_refused():
    with pytest.raises(ValueError, match="unknown gap_rounding"):
        infill(StubFlexMDM(gap=1.0), segments=[[[BOS], [5]]], gap_rounding="up")
