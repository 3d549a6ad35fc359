"""LLaDA baseline sampler: token-for-token equal to a plain per-row loop of LLaDA's algorithm; suppression; errors."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flexretrofit.models import LLaDAOutput
from flexretrofit.sampling import MDMGenerationConfig, generate_mdm, infill_mdm
from flexretrofit.sampling.mdm import transfer_counts
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm, tiny_llada


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def llada(tokenizer):
    return tiny_llada(tokenizer, seed=0)


@pytest.fixture(scope="module")
def flexmdm(tokenizer):
    model = tiny_flexmdm(tokenizer, seed=1)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.adaln.groups:
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=gen))
    return model


def reference_llada(
    model,
    prompt,
    steps,
    gen_length,
    block_length,
    temperature,
    cfg_scale,
    remasking,
    suppress,
    generator,
    is_flex,
    forbid_mask=True,
):
    """LLaDA's published sampler written plainly: per step, per row, Python loops (equal-length prompts).

    The published loop suppresses nothing (``suppress=[]``, ``forbid_mask=False``); ours never emits MASK.
    """
    mask_id = model.config.mask_token_id
    batch, prompt_length = prompt.shape
    x = torch.full((batch, prompt_length + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt_length] = prompt
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks

    def logits_of(ids, x):
        if is_flex:  # t = fraction of the generated region unmasked, of the conditional rows
            t = 1.0 - (x == mask_id).sum(1).float() / gen_length
            return model(ids, t.repeat(len(ids) // len(x))).logits
        return model(ids).logits

    for block in range(num_blocks):
        start, end = prompt_length + block * block_length, prompt_length + (block + 1) * block_length
        block_masks = (x[:, start:end] == mask_id).sum(1)
        counts = [
            [
                int(block_masks[b]) // steps_per_block + (i < int(block_masks[b]) % steps_per_block)
                for i in range(steps_per_block)
            ]
            for b in range(batch)
        ]
        for i in range(steps_per_block):
            with torch.no_grad():
                if cfg_scale > 0:
                    un_x = x.clone()
                    un_x[prompt_index] = mask_id
                    logits, un_logits = torch.chunk(logits_of(torch.cat([x, un_x]), x), 2, dim=0)
                    logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
                else:
                    logits = logits_of(x, x)
            logits = logits.clone()
            logits[:, :, suppress + ([mask_id] if forbid_mask else [])] = float("-inf")
            x0 = torch.empty(batch, end - start, dtype=torch.long)
            for b in range(batch):
                row = logits[b, start:end]
                if temperature > 0:
                    noise = torch.rand(row.shape, generator=generator, dtype=torch.float64)
                    row = row.double().exp() / (-torch.log(noise)) ** temperature
                x0[b] = row.argmax(-1)
            confidence = torch.empty(batch, end - start, dtype=torch.float64)
            for b in range(batch):
                if remasking == "low_confidence":
                    p = F.softmax(logits[b, start:end].double(), dim=-1)
                    confidence[b] = p[torch.arange(end - start), x0[b]]
                else:
                    confidence[b] = torch.rand(end - start, generator=generator, dtype=torch.float64)
            for b in range(batch):
                conf = torch.where(x[b, start:end] == mask_id, confidence[b], float("-inf"))
                chosen = torch.topk(conf, k=counts[b][i]).indices
                x[b, start + chosen] = x0[b, chosen]
    return x


CASES = [
    dict(cfg_scale=0.0, remasking="low_confidence", temperature=0.0),
    dict(cfg_scale=1.5, remasking="low_confidence", temperature=0.0),
    dict(cfg_scale=0.0, remasking="random", temperature=0.0),
    dict(cfg_scale=1.0, remasking="random", temperature=0.0),
    dict(cfg_scale=0.0, remasking="low_confidence", temperature=0.8),
    dict(cfg_scale=0.5, remasking="random", temperature=1.0),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("which", ["llada", "flexmdm"])
def test_matches_a_plain_loop_of_lladas_algorithm(case, which, request, tokenizer):
    model = request.getfixturevalue(which)
    prompt = torch.randint(10, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    # gen 12, block 4: three blocks of two steps, uneven per-step counts (2, 2 from 4 masks; with 12 steps: 1+1)
    settings = dict(steps=6, gen_length=12, block_length=4, **case)
    eos = tokenizer.eos_token_id
    expected = reference_llada(
        model,
        prompt,
        **settings,
        suppress=[eos],
        generator=torch.Generator().manual_seed(3),
        is_flex=which == "flexmdm",
    )
    output = generate_mdm(
        model, prompt, **settings, suppress_tokens=[eos], generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(output.sequences, expected)
    assert output.lengths.tolist() == [17, 17] and output.prompt_lengths.tolist() == [5, 5]


class EndingLM(nn.Module):
    """A tiny LLaDA whose EOS logit is raised by ``bias``: it ends its answers at varied places."""

    def __init__(self, base, eos, bias):
        super().__init__()
        self.base, self.eos, self.bias, self.config = base, eos, bias, base.config

    def forward(self, input_ids, attention_mask=None):
        logits = self.base(input_ids, attention_mask=attention_mask).logits.clone()
        logits[..., self.eos] += self.bias
        return LLaDAOutput(logits=logits)


EOS_BIAS = 0.5  # answers then end anywhere from the first position to never (checked below)


def _cut_at_first_stop(row, prompt_length, stops):
    """What a user reads of a published-loop canvas: the response up to its first stop token."""
    for position in range(prompt_length, len(row)):
        if int(row[position]) in stops:
            return row[:position].tolist()
    return row.tolist()


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_defaults_give_the_published_loops_tokens(case, llada, tokenizer):
    """With default settings (nothing suppressed) every row equals the published loop's, cut at EOS."""
    prompt = torch.randint(10, 300, (3, 5), generator=torch.Generator().manual_seed(1))
    settings = dict(steps=8, gen_length=16, block_length=8, **case)
    boosted = EndingLM(llada, tokenizer.eos_token_id, bias=EOS_BIAS)
    published = reference_llada(
        boosted, prompt, **settings, suppress=[], forbid_mask=False,
        generator=torch.Generator().manual_seed(4), is_flex=False,
    )  # fmt: skip
    output = generate_mdm(boosted, prompt, **settings, generator=torch.Generator().manual_seed(4))
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    expected = [_cut_at_first_stop(row, 5, stops) for row in published]
    got = [output.sequences[b, : output.lengths[b]].tolist() for b in range(3)]
    assert got == expected
    assert any(5 < len(row) < 21 for row in expected) or case["temperature"] == 0  # some ended mid-way


def test_uneven_step_counts_follow_lladas_rule():
    counts = transfer_counts(torch.tensor([7, 4, 0]), 3)
    assert counts.tolist() == [[3, 2, 2], [2, 1, 1], [0, 0, 0]]


def test_gumbel_at_temperature_zero_is_plain_argmax(llada):
    prompt = torch.randint(10, 300, (2, 4), generator=torch.Generator().manual_seed(1))
    settings = dict(steps=4, gen_length=8, block_length=8)
    greedy = generate_mdm(
        llada, prompt, **settings, temperature=0.0, generator=torch.Generator().manual_seed(0)
    )
    other_generator = generate_mdm(
        llada, prompt, **settings, temperature=0.0, generator=torch.Generator().manual_seed(9)
    )
    assert torch.equal(greedy.sequences, other_generator.sequences)
    hot = generate_mdm(llada, prompt, **settings, temperature=5.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(greedy.sequences, hot.sequences)


def test_prompts_of_different_lengths_give_each_row_what_it_gives_alone(llada):
    prompts = [[0, 11, 12], [0, 20, 21, 22, 23, 24, 25]]
    settings = dict(steps=8, gen_length=16, block_length=8)
    batch = generate_mdm(llada, prompts, **settings)
    for b, prompt in enumerate(prompts):
        alone = generate_mdm(llada, [prompt], **settings)
        assert alone.generated_ids()[0] == batch.generated_ids()[b]
        assert batch.sequences[b, : len(prompt)].tolist() == prompt


class FavouringLM(nn.Module):
    """A LLaDA-like model whose logits favour some ids by position: ``favour`` = {position: id}."""

    def __init__(self, vocab=40, favour=None, everywhere=()):
        super().__init__()
        self.config = SimpleNamespace(
            mask_token_id=2, pad_token_id=1, eos_token_id=1, max_sequence_length=128
        )
        self.table = nn.Parameter(torch.randn(128, vocab, generator=torch.Generator().manual_seed(0)))
        self.favour, self.everywhere = favour or {}, list(everywhere)

    def forward(self, input_ids, attention_mask=None):
        logits = self.table[: input_ids.shape[1]][None].repeat(input_ids.shape[0], 1, 1)
        logits[..., self.everywhere] += 50.0
        for position, token in self.favour.items():
            logits[:, position, token] += 100.0
        return LLaDAOutput(logits=logits)


def test_suppression_really_suppresses_eos_and_eot():
    eos, eot = 1, 5
    model = FavouringLM(everywhere=(eos, eot, 2))
    config = MDMGenerationConfig(steps=4, gen_length=8, block_length=4, suppress_tokens=[eos, eot])
    output = generate_mdm(model, [[0, 9, 9]], generation_config=config)
    generated = output.generated_ids()[0]
    assert len(generated) == 8 and not {eos, eot, 2} & set(generated)
    default = generate_mdm(model, [[0, 9, 9]], steps=4, gen_length=8, block_length=4)
    # By default nothing is suppressed: the answer ends at its first EOS (and at EoT when it is a stop id).
    assert len(default.generated_ids()[0]) < 8 and eos not in default.generated_ids()[0]
    both = generate_mdm(model, [[0, 9, 9]], steps=4, gen_length=8, block_length=4, eos_token_id=[eos, eot])
    assert both.generated_ids()[0] == []


def test_by_default_the_response_ends_at_the_first_stop_token():
    model = FavouringLM(favour={6: 1})  # EOS (= PAD) wins at canvas position 6
    output = generate_mdm(model, [[0, 9, 9], [0, 9, 9, 9, 9, 9, 9, 9]], steps=4, gen_length=8, block_length=8)
    assert output.lengths.tolist() == [6, 16]
    assert output.sequences[0, 6:].eq(1).all()
    assert 2 not in output.sequences[0, :6].tolist()


def test_infill_keeps_prefix_and_suffix_and_fills_the_middle(llada, tokenizer):
    prefixes, suffixes = [[0, 30, 31], [0, 40]], [[50, 51], [52, 53, 54]]
    output = infill_mdm(llada, prefixes, suffixes, steps=4, gen_length=8, block_length=4, cfg_scale=1.0)
    for b in range(2):
        n = int(output.lengths[b])
        row = output.sequences[b, :n].tolist()
        assert row[: len(prefixes[b])] == prefixes[b] and row[n - len(suffixes[b]) :] == suffixes[b]
        assert len(output.middles[b]) == 8 and tokenizer.mask_token_id not in output.middles[b]


def test_infill_drops_stop_tokens_from_the_middle():
    model = FavouringLM(favour={4: 1})  # EOS inside the middle, at canvas position 4
    output = infill_mdm(
        model, [[0, 9, 9]], [[7, 7]], steps=4, gen_length=4, block_length=4, suppress_tokens=[]
    )
    assert len(output.middles[0]) == 3 and 1 not in output.middles[0]
    assert output.sequences[0, : int(output.lengths[0])].tolist()[-2:] == [7, 7]


def test_trace_records_one_unmasking_step_per_forward_pass(llada):
    output = generate_mdm(llada, [[0, 11, 12]], steps=4, gen_length=8, block_length=4, return_trace=True)
    assert len(output.trace) == 5
    assert [int(step.unmasked.sum()) for step in output.trace[1:]] == [2, 2, 2, 2]
    assert not (output.trace[-1].sequences == llada.config.mask_token_id).any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gen_length=10, block_length=4), "not a multiple of block_length"),
        (dict(gen_length=8, block_length=4, steps=3), "split evenly"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(remasking="top_k"), "unknown remasking"),
        (dict(gen_length=512, block_length=512, steps=1), "above the model's limit"),
    ],
)
def test_bad_settings_raise_clear_errors(llada, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_mdm(llada, [[0, 1, 2]], **kwargs)


def test_ids_outside_the_vocabulary_are_named(llada):
    vocab = llada.config.vocab_size
    with pytest.raises(
        ValueError, match=rf"row 1 holds token id {vocab}, outside the model's vocabulary \[0, {vocab}\)"
    ):
        generate_mdm(llada, [[0, 5], [5, vocab]], steps=1, gen_length=4, block_length=4)
    with pytest.raises(ValueError, match=r"row 0 holds token id -1, outside"):
        generate_mdm(llada, torch.tensor([[5, -1]]), steps=1, gen_length=4, block_length=4)
    with pytest.raises(ValueError, match=r"row 0 holds token id 1000000, outside"):
        infill_mdm(llada, [[5]], [[1_000_000]], steps=1, gen_length=4, block_length=4)


def test_an_empty_batch_gives_an_empty_output(llada):
    for out in (
        generate_mdm(llada, [], steps=1, gen_length=4, block_length=4),
        generate_mdm(llada, torch.zeros(0, 3, dtype=torch.long), steps=1, gen_length=4, block_length=4),
        infill_mdm(llada, [], [], steps=1, gen_length=4, block_length=4),
    ):
        assert out.sequences.shape == (0, 0) and out.lengths.shape == (0,)
        assert out.generated_ids() == [] and out.middles in (None, [])


def test_empty_prompt_and_wrong_config_class_raise(llada):
    with pytest.raises(ValueError, match="empty"):
        generate_mdm(llada, [[0, 5], []], steps=1, gen_length=4, block_length=4)
    with pytest.raises(ValueError, match="empty prefix and an empty suffix"):
        infill_mdm(llada, [[]], [[]], steps=1, gen_length=4, block_length=4)
    from flexretrofit.sampling import FlexGenerationConfig

    with pytest.raises(ValueError, match="takes a MDMGenerationConfig"):
        generate_mdm(llada, [[0, 5]], generation_config=FlexGenerationConfig())
