"""Tokenizer loading: mask role, pad = eos, chat template that honours add_generation_prompt."""

import json
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from flexretrofit.testing import build_tiny_tokenizer
from flexretrofit.tokenizer import MASK_TOKEN, load_tokenizer, stop_token_ids


def test_mask_token_is_restored_when_the_files_lack_it(tmp_path):
    build_tiny_tokenizer(save_dir=tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("mask_token", None)  # the published LLaDA files do not set it
    config_path.write_text(json.dumps(config))
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.mask_token == MASK_TOKEN
    assert tokenizer.mask_token_id == tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.decode([tokenizer.mask_token_id]) == MASK_TOKEN


def test_tokenizer_without_mask_token_raises_with_advice(tmp_path):
    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2}, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="add_special_tokens"):
        load_tokenizer(tmp_path)


def test_chat_template_respects_add_generation_prompt():
    tokenizer = build_tiny_tokenizer()
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert without.startswith(
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?<|eot_id|>"
    )
    assert "assistant" not in without
    assert with_prompt == without + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_tiny_tokenizer_round_trips_text_and_reloads(tmp_path):
    tokenizer = build_tiny_tokenizer(save_dir=tmp_path)
    text = "def f(x):\n    return x * 2  # 1,000 mazes"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    reloaded = load_tokenizer(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert {reloaded.mask_token_id, reloaded.eos_token_id, reloaded.bos_token_id} == {
        tokenizer.mask_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
    }
    assert "<|boundary|>" in reloaded.get_vocab()


def test_stop_tokens_are_eos_and_end_of_turn_when_the_vocabulary_has_it():
    tokenizer = build_tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    assert stop_token_ids(tokenizer) == sorted({tokenizer.eos_token_id, vocab["<|eot_id|>"]})
    base_vocab = {token: i for token, i in vocab.items() if token != "<|eot_id|>"}  # a base model's
    base = SimpleNamespace(eos_token_id=tokenizer.eos_token_id, get_vocab=lambda: base_vocab)
    assert stop_token_ids(base) == [tokenizer.eos_token_id]


def test_the_old_import_path_names_the_same_objects():
    import flexretrofit.models.tokenizer as old
    import flexretrofit.tokenizer as new

    for name in (
        "MASK_TOKEN",
        "END_OF_TURN",
        "CHAT_TEMPLATE",
        "load_tokenizer",
        "prepare_tokenizer",
        "stop_token_ids",
    ):
        assert getattr(old, name) is getattr(new, name)
    from flexretrofit.models import load_tokenizer

    assert load_tokenizer is new.load_tokenizer
