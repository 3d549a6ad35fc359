"""Flexible-length sampler: invariants, rates from the model's schedules, per-row determinism, bad input."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from flexretrofit.diffusion import build_schedule
from flexretrofit.models import FlexMDMOutput
from flexretrofit.sampling import FlexGenerationConfig, generate_flex, infill
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm

BOS, EOS_PAD, MASK = 0, 1, 2


class StubFlexMDM(nn.Module):
    """FlexMDM's forward signature with fixed random logits (by position and previous token) and constant gaps.

    ``favour`` ids get +100 on their logits (a model that would emit them if allowed).
    """

    def __init__(
        self, gap=0.0, vocab=40, max_length=256, insertion="linear", unmask="linear", favour=(), seed=0
    ):
        super().__init__()
        self.config = SimpleNamespace(
            mask_token_id=MASK,
            pad_token_id=EOS_PAD,
            eos_token_id=EOS_PAD,
            max_length=max_length,
            vocab_size=vocab,
            insertion_schedule=build_schedule(insertion).to_dict(),
            unmask_schedule=build_schedule(unmask).to_dict(),
        )
        gen = torch.Generator().manual_seed(seed)
        self.token_table = nn.Parameter(torch.randn(vocab, vocab, generator=gen), requires_grad=False)
        self.position_table = nn.Parameter(
            torch.randn(max_length + 1, vocab, generator=gen), requires_grad=False
        )
        self.gap, self.favour = gap, list(favour)
        self.calls = []

    @property
    def insertion_schedule(self):
        return build_schedule(self.config.insertion_schedule)

    @property
    def unmask_schedule(self):
        return build_schedule(self.config.unmask_schedule)

    def forward(self, input_ids, t, attention_mask=None, logits_positions=None):
        batch, length = input_ids.shape
        self.calls.append((length, float(t[0])))
        logits = self.position_table[:length][None] + self.token_table[input_ids.roll(1, dims=1)]
        logits[..., self.favour] += 100.0
        if logits_positions is not None:
            logits = logits[logits_positions]
        lengths = attention_mask.sum(dim=1)
        slot_valid = torch.arange(length + 1)[None] <= lengths[:, None]
        return FlexMDMOutput(logits=logits, expected_gaps=self.gap * slot_valid.float())


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    """Tiny FlexMDM with non-zero time conditioning and a slot-dependent insertion head."""
    model = tiny_flexmdm(tokenizer, seed=0, insertion_head_init=1.5)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.adaln.groups:
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=gen))
        head = model.insertion_head.out
        head.weight.copy_(0.5 * torch.randn(head.weight.shape, generator=gen) / head.weight.shape[1] ** 0.5)
    return model


def prompts_of(lengths, seed=0, high=300):
    gen = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(10, high, (n - 1,), generator=gen).tolist() for n in lengths]


def check_trace(output, prefixes, suffixes, cap, mask_id, forbidden):
    """Every invariant the sampler promises, checked step by step on the trace."""
    trace = output.trace
    assert trace[0].step == 0 and len(trace) > 1
    for b, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
        start = torch.tensor(prefix + suffix)
        assert torch.equal(trace[0].sequences[b, : len(start)], start)
        for prev, cur in zip(trace, trace[1:]):
            n_prev, n_cur = int(prev.lengths[b]), int(cur.lengths[b])
            assert n_prev <= n_cur <= cap
            old, new = prev.sequences[b, :n_prev], cur.sequences[b, :n_cur]
            moved = cur.moved_to[b, :n_prev]
            assert (moved.diff() > 0).all(), "tokens keep their order"
            assert torch.equal(moved[: len(prefix)], torch.arange(len(prefix))), (
                "no insertion inside the prefix"
            )
            tail = torch.arange(n_cur - len(suffix), n_cur)
            assert torch.equal(moved[n_prev - len(suffix) :], tail), "no insertion inside the suffix"
            clean = old != mask_id
            assert torch.equal(new[moved][clean], old[clean]), "clean tokens never change"
            unmasked = cur.unmasked[b, :n_prev]
            assert torch.equal(unmasked, (old == mask_id) & (new[moved] != mask_id))
            inserted = cur.inserted[b, :n_cur]
            assert int(inserted.sum()) == n_cur - n_prev and (new[inserted] == mask_id).all()
            assert not torch.isin(new[moved][unmasked], forbidden).any()
            assert (cur.sequences[b, n_cur:] == EOS_PAD).all()
    final = output.sequences
    for b, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
        n = int(output.lengths[b])
        row = final[b, :n]
        assert row[: len(prefix)].tolist() == prefix
        assert row[n - len(suffix) :].tolist() == suffix
        assert not torch.isin(row[len(prefix) : n - len(suffix)], forbidden).any()
        assert torch.equal(row, trace[-1].sequences[b, :n])
    assert final.shape[1] == int(output.lengths.max())


def test_generation_keeps_every_invariant(model, tokenizer):
    prompts = prompts_of([5, 2, 9])
    output = generate_flex(model, prompts, steps=24, max_length=64, return_trace=True)
    forbidden = torch.tensor([tokenizer.mask_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id])
    check_trace(output, prompts, [[]] * 3, 64, tokenizer.mask_token_id, forbidden)
    assert torch.equal(output.prompt_lengths, torch.tensor([5, 2, 9]))
    assert (output.lengths > output.prompt_lengths).all(), "the insertion head is non-zero: rows grow"
    assert output.generated_ids()[1] == output.sequences[1, 2 : int(output.lengths[1])].tolist()


def test_infill_keeps_prefix_and_suffix_and_returns_the_middle_by_position(model, tokenizer):
    prefixes, suffixes = prompts_of([4, 1, 6], seed=1), [[7, 8, 9], [10], []]
    output = infill(model, prefixes, suffixes, steps=20, max_length=48, return_trace=True)
    forbidden = torch.tensor([tokenizer.mask_token_id, tokenizer.pad_token_id])
    check_trace(output, prefixes, suffixes, 48, tokenizer.mask_token_id, forbidden)
    for b, middle in enumerate(output.middles):
        n = int(output.lengths[b])
        assert middle == output.sequences[b, len(prefixes[b]) : n - len(suffixes[b])].tolist()
        assert len(middle) > 0


def test_empty_middle_has_exactly_one_eligible_slot():
    stub = StubFlexMDM(gap=3.0)
    output = infill(stub, [[BOS, 5, 6]], [[7, 8]], steps=6, max_length=64, return_trace=True)
    first = output.trace[1]
    assert first.moved_to[0, :5].tolist() == [
        0,
        1,
        2,
        3 + int(first.inserted.sum()),
        4 + int(first.inserted.sum()),
    ]
    assert first.inserted[0].nonzero().squeeze(1).tolist() == list(range(3, 3 + int(first.inserted.sum())))
    assert int(first.inserted.sum()) > 0
    check_trace(output, [[BOS, 5, 6]], [[7, 8]], 64, MASK, torch.tensor([MASK, EOS_PAD]))


def test_fixed_seed_reproduces_and_another_seed_differs(model):
    prompts = prompts_of([3, 6])
    first = generate_flex(model, prompts, steps=16, max_length=48, temperature=1.0)
    again = generate_flex(model, prompts, steps=16, max_length=48, temperature=1.0)
    other = generate_flex(model, prompts, steps=16, max_length=48, temperature=1.0, seed=7)
    assert torch.equal(first.sequences, again.sequences)
    assert not torch.equal(first.sequences, other.sequences)
    # A generator draws the base seed: reproducible from the generator's seed.
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    from_a = generate_flex(model, prompts, steps=8, max_length=48, temperature=1.0, generator=gen_a)
    from_b = generate_flex(model, prompts, steps=8, max_length=48, temperature=1.0, generator=gen_b)
    assert torch.equal(from_a.sequences, from_b.sequences)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_gives_each_row_what_it_gives_alone(model, temperature):
    prompts = prompts_of([2, 7, 4])
    config = FlexGenerationConfig(
        steps=20, max_length=64, temperature=temperature, seed=11, confidence="prob_diff"
    )
    batch = generate_flex(model, prompts, generation_config=config)
    for b, prompt in enumerate(prompts):
        alone = generate_flex(model, [prompt], generation_config=config, row_seeds=[11 + b])
        assert alone.generated_ids()[0] == batch.generated_ids()[b]


def test_infill_batch_gives_each_row_what_it_gives_alone(model):
    prefixes, suffixes = prompts_of([3, 6], seed=2), [[40, 41], [42]]
    batch = infill(model, prefixes, suffixes, steps=16, max_length=40, row_seeds=[5, 9])
    for b in range(2):
        alone = infill(model, [prefixes[b]], [suffixes[b]], steps=16, max_length=40, row_seeds=[[5, 9][b]])
        assert alone.middles[0] == batch.middles[b]


def test_fixed_canvas_full_softmax_mode_gives_the_same_output(model):
    prompts = prompts_of([3, 8])
    config = FlexGenerationConfig(
        steps=16, max_length=64, sliding_window=True, window_scale=2.0, max_window=4
    )
    fast = generate_flex(model, prompts, generation_config=config)
    slow = generate_flex(model, prompts, generation_config=config, fixed_canvas=True, full_softmax=True)
    assert torch.equal(fast.sequences, slow.sequences)
    assert torch.equal(fast.lengths, slow.lengths)


def test_steps_run_on_the_current_length_not_the_cap():
    stub = StubFlexMDM(gap=0.3, max_length=256)
    generate_flex(stub, prompts_of([3], high=40), steps=8, max_length=256, bucket_size=16)
    assert stub.calls[0][0] == 16
    assert all(width % 16 == 0 and width < 256 for width, _ in stub.calls)
    assert [t for _, t in stub.calls] == [k / 8 for k in range(8)]
    stub.calls.clear()
    generate_flex(stub, prompts_of([3], high=40), steps=8, max_length=256, fixed_canvas=True)
    assert all(width == 256 for width, _ in stub.calls)


def test_zero_expected_gaps_never_change_the_length():
    stub = StubFlexMDM(gap=0.0)
    prompts = prompts_of([3, 5], high=40)
    output = generate_flex(stub, prompts, steps=10, max_length=64, return_trace=True)
    assert all(torch.equal(step.lengths, torch.tensor([3, 5])) for step in output.trace)
    assert output.generated_ids() == [[], []]


def poisson_min_mean(rate, cap):
    """E[min(X, cap)] for X ~ Poisson(rate), elementwise."""
    k = torch.arange(int(cap.max()) + 1, dtype=torch.float64)
    pmf = torch.distributions.Poisson(rate.double()[:, None].clamp(min=1e-12)).log_prob(k).exp()
    below = k[None] < cap[:, None]
    return (pmf * k * below).sum(1) + cap * (1 - (pmf * below).sum(1))


def test_mean_insertions_per_step_follow_g_hat_times_the_models_insertion_rate():
    gap, steps, rows = 2.0, 20, 64
    stub = StubFlexMDM(gap=gap, max_length=2048, insertion={"name": "polynomial", "power": 2.0})
    output = generate_flex(stub, [[BOS, 5]] * rows, steps=steps, max_length=2048, return_trace=True, seed=3)
    inserted, expected, linear_expected = 0, 0.0, 0.0
    for k, (prev, cur) in enumerate(zip(output.trace[:-2], output.trace[1:-1])):
        slots = (prev.lengths - 2 + 1).double()  # eligible slots: after the prompt
        t = torch.tensor(k / steps, dtype=torch.float64)
        inserted += int(cur.inserted.sum())
        expected += float((gap * slots * stub.insertion_schedule.rate(t) / steps).sum())
        linear_expected += float((gap * slots * build_schedule("linear").rate(t) / steps).sum())
    assert int(output.trace[-1].inserted.sum()) == 0, "the last step inserts nothing"
    assert abs(inserted - expected) < 4 * expected**0.5
    assert abs(inserted - linear_expected) > 4 * linear_expected**0.5, "the test can tell the schedules apart"


def test_mean_unmask_count_follows_the_models_unmask_rate():
    steps, rows = 16, 48
    stub = StubFlexMDM(gap=1.5, max_length=1024, unmask={"name": "polynomial", "power": 3.0})
    output = generate_flex(stub, [[BOS, 5]] * rows, steps=steps, max_length=1024, return_trace=True, seed=5)
    unmasked, expected, linear_expected, variance = 0, 0.0, 0.0, 0.0
    for k, (prev, cur) in enumerate(zip(output.trace[:-2], output.trace[1:-1])):
        masks = (prev.sequences == MASK).sum(1)
        t = torch.tensor(k / steps, dtype=torch.float64)
        rate = masks * stub.unmask_schedule.rate(t) / steps
        unmasked += int(cur.unmasked.sum())
        expected += float(poisson_min_mean(rate, masks).sum())
        linear_expected += float(
            poisson_min_mean(masks * build_schedule("linear").rate(t) / steps, masks).sum()
        )
        variance += float(rate.sum())
    assert expected > 100
    assert abs(unmasked - expected) < 4 * variance**0.5
    assert abs(unmasked - linear_expected) > 4 * variance**0.5, "the test can tell the schedules apart"
    last = output.trace[-1]
    assert not (last.sequences == MASK).any(), "the last step fills every MASK"


class RemainingCountStub(StubFlexMDM):
    """Knows the answer length: the end slot predicts exactly the tokens still missing, other slots 0."""

    def __init__(self, total_length, **kwargs):
        super().__init__(**kwargs)
        self.total_length = total_length

    def forward(self, input_ids, t, attention_mask=None, logits_positions=None):
        out = super().forward(input_ids, t, attention_mask, logits_positions)
        lengths = attention_mask.sum(dim=1)
        end_slot = torch.arange(input_ids.shape[1] + 1)[None] == lengths[:, None]
        missing = (self.total_length - lengths).clamp(min=0).float()
        return FlexMDMOutput(logits=out.logits, expected_gaps=end_slot * missing[:, None])


@pytest.mark.parametrize("insertion", ["linear", {"name": "geometric", "min": 10.0, "max": 0.01}])
def test_binomial_counts_reach_a_known_length_exactly_where_poisson_steps_miss_it(insertion):
    stub = RemainingCountStub(total_length=12, insertion=insertion, max_length=64)
    prompts = [[BOS, 5]] * 64
    exact = generate_flex(stub, prompts, steps=16, max_length=64, count_distribution="binomial", seed=1)
    assert exact.lengths.tolist() == [12] * 64
    euler = generate_flex(stub, prompts, steps=16, max_length=64, seed=1)
    assert (euler.lengths != 12).sum() >= 8, "the test can tell the two count distributions apart"


def test_binomial_unmask_counts_follow_the_step_probability():
    steps, rows = 16, 48
    stub = StubFlexMDM(gap=1.5, max_length=1024, unmask={"name": "polynomial", "power": 3.0})
    output = generate_flex(
        stub,
        [[BOS, 5]] * rows,
        steps=steps,
        max_length=1024,
        return_trace=True,
        seed=5,
        count_distribution="binomial",
    )
    unmasked, expected, variance = 0, 0.0, 0.0
    for k, (prev, cur) in enumerate(zip(output.trace[:-2], output.trace[1:-1])):
        masks = (prev.sequences == MASK).sum(1).double()
        survival = stub.unmask_schedule.survival(
            torch.tensor([k / steps, (k + 1) / steps], dtype=torch.float64)
        )
        p = float(1 - survival[1] / survival[0])
        unmasked += int(cur.unmasked.sum())
        expected += float((masks * p).sum())
        variance += float((masks * p * (1 - p)).sum())
    assert expected > 100
    assert abs(unmasked - expected) < 4 * variance**0.5 + 1


def test_unknown_count_distribution_is_refused():
    with pytest.raises(ValueError, match="count_distribution"):
        FlexGenerationConfig(count_distribution="normal")


def test_insertions_are_truncated_slot_by_slot_at_the_cap():
    stub = StubFlexMDM(gap=50.0, max_length=64)
    output = generate_flex(stub, prompts_of([3, 10], high=40), steps=6, max_length=40, return_trace=True)
    assert output.lengths.tolist() == [40, 40], "a whole-row drop would leave the rows short of the cap"
    assert all(int(step.lengths.max()) <= 40 for step in output.trace)
    checked = 0
    for prev, cur in zip(output.trace, output.trace[1:]):
        for b, prompt_length in enumerate([3, 10]):
            n_prev, n_cur = int(prev.lengths[b]), int(cur.lengths[b])
            if n_prev < n_cur == 40 and n_prev > prompt_length:  # truncated with several eligible slots
                # Kept from the left: the rightmost slot (after the last token) got nothing.
                assert int(cur.moved_to[b, n_prev - 1]) == 39
                checked += 1
    assert checked >= 1


def test_masks_pads_eos_and_suppressed_tokens_are_never_emitted():
    stub = StubFlexMDM(gap=1.0, favour=(MASK, EOS_PAD, 33))
    output = generate_flex(
        stub, prompts_of([2, 4], high=40), steps=12, max_length=64, suppress_tokens=[33], temperature=0.5
    )
    generated = sum(output.generated_ids(), [])
    assert generated and not {MASK, EOS_PAD, 33} & set(generated)


@pytest.mark.parametrize("method", ["top_prob", "prob_diff", "entropy", "position"])
def test_each_step_unmasks_the_most_confident_masks(method):
    stub = StubFlexMDM(gap=4.0, max_length=128)
    output = generate_flex(
        stub, prompts_of([3], high=40), steps=16, max_length=128, confidence=method, return_trace=True
    )
    checked = 0
    for k, (prev, cur) in enumerate(zip(output.trace[:-2], output.trace[1:-1])):
        ids = prev.sequences
        valid = torch.arange(ids.shape[1])[None] < prev.lengths[:, None]
        logits = stub(ids, torch.full((1,), k / 16), valid).logits[0]
        logits[:, [MASK, EOS_PAD]] = float("-inf")
        p = logits.softmax(-1)
        score = {
            "top_prob": p.max(-1).values,
            "prob_diff": p.topk(2, -1).values[:, 0] - p.topk(2, -1).values[:, 1],
            "entropy": (p * p.clamp(min=1e-30).log()).sum(-1),
            "position": -torch.arange(len(p)).float(),
        }[method]
        is_mask, chosen = ids[0] == MASK, cur.unmasked[0]
        if chosen.any() and (is_mask & ~chosen).any():
            assert score[chosen].min() >= score[is_mask & ~chosen].max() - 1e-6
            checked += 1
    assert checked >= 3


def test_position_confidence_unmasks_the_leftmost_masks():
    stub = StubFlexMDM(gap=1.0, max_length=128)
    output = generate_flex(
        stub, prompts_of([2], high=40), steps=12, max_length=128, confidence="position", return_trace=True
    )
    for prev, cur in zip(output.trace, output.trace[1:]):
        is_mask = prev.sequences[0] == MASK
        count = int(cur.unmasked[0].sum())
        assert torch.equal(cur.unmasked[0], is_mask & (is_mask.cumsum(0) <= count))


def test_sliding_window_keeps_unmasking_among_the_leftmost_masks():
    stub = StubFlexMDM(gap=2.0, max_length=256, unmask="cosine")
    scale, max_window = 1.5, 3
    output = generate_flex(
        stub,
        prompts_of([2], high=40),
        steps=12,
        max_length=256,
        sliding_window=True,
        window_scale=scale,
        max_window=max_window,
        return_trace=True,
    )
    wide_window_seen = False
    for prev, cur in zip(output.trace[:-2], output.trace[1:-1]):
        is_mask = prev.sequences[0] == MASK
        count = int(cur.unmasked[0].sum())
        window = max(min(int(scale * count), max_window), count)
        rank = is_mask.cumsum(0) - 1
        assert (rank[cur.unmasked[0]] < window).all()
        wide_window_seen |= int(is_mask.sum()) > window > 0
    assert wide_window_seen, "some step had MASKs outside its window"


def test_model_method_delegates_with_keyword_overrides(model):
    prompts = prompts_of([4])
    config = FlexGenerationConfig(steps=8, max_length=32)
    direct = generate_flex(model, prompts, generation_config=config, seed=4)
    method = model.generate_flex(torch.tensor(prompts), generation_config=config, seed=4)
    assert torch.equal(direct.sequences, method.sequences)
    assert config.seed == 0, "overrides apply to a copy"


def test_tensor_batches_with_left_or_right_padding_equal_lists(model):
    prompts = prompts_of([2, 5])
    as_list = generate_flex(model, prompts, steps=8, max_length=32)
    ids = torch.full((2, 5), EOS_PAD)
    mask = torch.zeros(2, 5, dtype=torch.long)
    ids[0, 3:], mask[0, 3:] = torch.tensor(prompts[0]), 1  # left-padded
    ids[1], mask[1] = torch.tensor(prompts[1]), 1
    as_tensor = generate_flex(model, ids, mask, steps=8, max_length=32)
    assert torch.equal(as_list.sequences, as_tensor.sequences)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: generate_flex(m, [[BOS, 5], []], steps=4), "empty"),
        (lambda m: generate_flex(m, [[BOS] * 40], steps=4, max_length=32), "above the length cap"),
        (lambda m: generate_flex(m, [[BOS]], steps=0), "steps must be an integer >= 1"),
        (lambda m: generate_flex(m, [[BOS]], confidence="margin"), "unknown confidence method"),
        (lambda m: generate_flex(m, [[BOS, MASK]], steps=4), "MASK id"),
        (lambda m: generate_flex(m, [[BOS]], max_length=10_000), "above the model's limit"),
        (lambda m: generate_flex(m, [[BOS], [BOS]], row_seeds=[1]), "one seed per row"),
        (lambda m: generate_flex(m, [[BOS]], stepz=4), "unknown generation option"),
        (lambda m: infill(m, [[]], [[]], steps=4), "empty prefix and an empty suffix"),
        (
            lambda m: generate_flex(m, [[BOS, 5], [BOS, 40]], steps=4),
            r"row 1 holds token id 40, outside the model's vocabulary \[0, 40\); pass ids from",
        ),
        (lambda m: generate_flex(m, torch.tensor([[BOS, -3]]), steps=4), r"token id -3, outside"),
        (lambda m: infill(m, [[BOS]], [[7, 99]], steps=4), r"row 0 holds token id 99, outside"),
        (lambda m: infill(m, segments=[[[BOS], [6]], [[BOS], [5], [41]]]), r"row 1 holds token id 41"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    model = StubFlexMDM()
    with pytest.raises(ValueError, match=message) as error:
        call(model)
    assert "\n" not in str(error.value) and model.calls == []  # refused before any forward pass


@pytest.mark.parametrize(
    "call",
    [
        lambda m: generate_flex(m, []),
        lambda m: generate_flex(m, torch.zeros(0, 4, dtype=torch.long)),
        lambda m: infill(m, [], []),
        lambda m: infill(m, segments=[]),
    ],
)
def test_an_empty_batch_gives_an_empty_output(call):
    model = StubFlexMDM()
    out = call(model)
    assert out.sequences.shape == (0, 0) and out.sequences.dtype == torch.long
    assert out.lengths.shape == out.prompt_lengths.shape == out.suffix_lengths.shape == (0,)
    assert out.generated_ids() == [] and model.calls == []
    assert out.middles in (None, [])
    assert generate_flex(model, [], return_trace=True).trace == []


def test_a_llada_model_is_refused_naming_the_fixed_length_samplers():
    from flexretrofit.testing import tiny_llada

    model = tiny_llada(seed=0)
    with pytest.raises(TypeError, match=r"generate_flex needs a FlexMDM .*LLaDAModelLM.*generate_mdm"):
        generate_flex(model, [[3, 4]])
    with pytest.raises(TypeError, match=r"infill needs a FlexMDM .*infill_mdm"):
        infill(model, [[3]], [[4]])


def test_text_and_tokenizer_output_as_prompts():
    from transformers import BatchEncoding

    model = StubFlexMDM(gap=2.0)
    with pytest.raises(TypeError, match="tokenize it first"):
        generate_flex(model, "maze 5x5", steps=4)
    encoding = BatchEncoding({"input_ids": torch.tensor([[BOS, 5, 6]]), "attention_mask": torch.ones(1, 3)})
    expected = generate_flex(model, [[BOS, 5, 6]], steps=4, max_length=16)
    got = generate_flex(model, encoding, steps=4, max_length=16)
    torch.testing.assert_close(got.sequences, expected.sequences)
