"""Text convenience: strings in, only the generated text out; the config picks the sampler."""

import pytest
import torch
from torch import nn

from flexretrofit.models import LLaDAOutput
from flexretrofit.sampling import (
    FlexGenerationConfig,
    MDMGenerationConfig,
    generate_flex,
    generate_mdm,
    generate_text,
    infill,
    infill_text,
)
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm, tiny_llada


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_flexmdm(tokenizer, seed=0, insertion_head_init=1.0)


def test_generate_text_decodes_only_the_generated_tokens(model, tokenizer):
    prompts = ["The quick brown", "def add(a, b):"]
    config = FlexGenerationConfig(steps=8, max_length=32)
    texts = generate_text(model, tokenizer, prompts, config)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    expected = generate_flex(model, ids, generation_config=config).generated_ids()
    assert texts == tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert all(not text.startswith(prompt) for text, prompt in zip(texts, prompts))


def test_an_mdm_config_runs_the_baseline(model, tokenizer):
    config = MDMGenerationConfig(steps=4, gen_length=8, block_length=4)
    texts = generate_text(model, tokenizer, ["The quick"], config)
    ids = [tokenizer("The quick", add_special_tokens=False)["input_ids"]]
    assert texts == tokenizer.batch_decode(generate_mdm(model, ids, generation_config=config).generated_ids())


class EndOfTurnAt(nn.Module):
    """A tiny LLaDA that says <|eot_id|> at one canvas position (as an instruct model ends its turn)."""

    def __init__(self, base, eot, position):
        super().__init__()
        self.base, self.eot, self.position, self.config = base, eot, position, base.config

    def forward(self, input_ids, attention_mask=None):
        logits = self.base(input_ids, attention_mask=attention_mask).logits.clone()
        logits[:, self.position, self.eot] += 100.0
        return LLaDAOutput(logits=logits)


def test_mdm_text_ends_at_the_end_of_turn_token(tokenizer):
    eot = tokenizer.get_vocab()["<|eot_id|>"]
    ids = tokenizer("The quick", add_special_tokens=False)["input_ids"]
    model = EndOfTurnAt(tiny_llada(tokenizer, seed=0), eot, position=len(ids) + 3)
    config = MDMGenerationConfig(steps=4, gen_length=8, block_length=8)
    full = generate_mdm(model, [ids], generation_config=config).generated_ids()[0]  # ids only: EOS stops
    assert len(full) == 8 and full[3] == eot
    texts = generate_text(model, tokenizer, ["The quick"], config, skip_special_tokens=False)
    assert texts == [tokenizer.decode(full[:3], skip_special_tokens=False)]


def test_infill_text_decodes_the_middle_from_positions(model, tokenizer):
    middles = infill_text(model, tokenizer, ["def add(a, b):\n"], ["\n    return a"], steps=8, max_length=48)
    prefix = tokenizer("def add(a, b):\n", add_special_tokens=False)["input_ids"]
    suffix = tokenizer("\n    return a", add_special_tokens=False)["input_ids"]
    expected = infill(model, [prefix], [suffix], steps=8, max_length=48).middles
    assert middles == tokenizer.batch_decode(expected, skip_special_tokens=True)


def test_a_single_string_is_an_error(model, tokenizer):
    with pytest.raises(ValueError, match="list of strings"):
        generate_text(model, tokenizer, "The quick")
    assert torch.is_tensor(model.generate_flex([[0, 5]], steps=2, max_length=8).sequences)
