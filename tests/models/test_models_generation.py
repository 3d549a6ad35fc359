"""model.generate and model.generation_config: the sampler of each model class, its config saved as
generation_config.json and loaded back, and that config as the default of every sampler call."""

import json

import pytest
import torch

from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM
from flexretrofit.sampling import (
    FlexGenerationConfig,
    MDMGenerationConfig,
    generate_flex,
    generate_mdm,
    generate_text,
)
from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint, tiny_flexmdm, tiny_llada

PROMPTS = [[5, 6, 7], [8, 9]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_both_classes_can_generate_and_carry_their_sampler_config():
    flex, llada = tiny_flexmdm(seed=0), tiny_llada(seed=0)
    assert FlexMDMForMaskedDiffusion.can_generate() and LLaDAModelLM.can_generate()
    assert type(flex.generation_config) is FlexGenerationConfig
    assert type(llada.generation_config) is MDMGenerationConfig
    # Sampler defaults, not values copied from the model config (whose max_length is the model's cap).
    assert flex.generation_config == FlexGenerationConfig() and flex.generation_config.max_length is None


def test_flexmdm_generate_is_generate_flex_with_the_models_config():
    model = tiny_flexmdm(seed=1)
    model.generation_config = FlexGenerationConfig(steps=5, max_length=24, return_trace=True)
    out = model.generate(PROMPTS)
    assert len(out.trace) == 5 + 1 and int(out.lengths.max()) <= 24
    same = generate_flex(model, PROMPTS)  # the function reads the model's config too
    torch.testing.assert_close(same.sequences, out.sequences)
    assert len(model.generate(PROMPTS, steps=3).trace) == 3 + 1  # kwargs override a field
    explicit = FlexGenerationConfig(steps=2, return_trace=True)
    assert len(model.generate(PROMPTS, generation_config=explicit).trace) == 2 + 1  # explicit wins
    assert model.generation_config.steps == 5  # the model's config is never changed by a call


def test_llada_generate_is_generate_mdm_with_the_models_config():
    model = tiny_llada(seed=2)
    model.generation_config = MDMGenerationConfig(steps=4, gen_length=4, block_length=4)
    out = model.generate(torch.tensor([[5, 6, 7]]))
    assert out.lengths.tolist() == [3 + 4]  # EOS suppressed: exactly gen_length new tokens
    torch.testing.assert_close(generate_mdm(model, [[5, 6, 7]]).sequences, out.sequences)
    assert model.generate([[5, 6, 7]], gen_length=8, steps=8, block_length=8).lengths.tolist() == [3 + 8]


def test_generate_names_an_id_outside_the_vocabulary():
    flex_options, mdm_options = dict(steps=4), dict(steps=4, gen_length=4, block_length=4)
    for model, options in ((tiny_flexmdm(seed=0), flex_options), (tiny_llada(seed=0), mdm_options)):
        vocab = model.get_input_embeddings().num_embeddings
        for bad in (vocab, 1_000_000, -1):
            with pytest.raises(ValueError) as error:
                model.generate([[5, 6], [7, bad]], **options)
            assert str(error.value) == (
                f"row 1 holds token id {bad}, outside the model's vocabulary [0, {vocab}); pass ids from the "
                "model's own tokenizer."
            )


def test_an_empty_batch_generates_nothing_but_an_empty_prompt_is_refused(tokenizer):
    for model in (tiny_flexmdm(seed=0), tiny_llada(seed=0)):
        for batch in ([], torch.zeros(0, 3, dtype=torch.long)):
            out = model.generate(batch)
            assert out.sequences.shape == (0, 0) and out.lengths.tolist() == []
        assert generate_text(model, tokenizer, []) == []
        for batch in ([[5, 6], []], [[]], torch.zeros(2, 0, dtype=torch.long)):
            with pytest.raises(ValueError, match=r"^prompt \d is empty; give every row at least one token"):
                model.generate(batch)


def test_flexmdm_saves_and_loads_its_generation_config(tmp_path):
    model = tiny_flexmdm(seed=3)
    model.generation_config = FlexGenerationConfig(steps=6, confidence="prob_diff", max_length=30, seed=4)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert (saved["steps"], saved["confidence"], saved["max_length"]) == (6, "prob_diff", 30)
    assert "bucket_size" in saved and "count_distribution" in saved  # every field, defaults included

    loaded = FlexMDMForMaskedDiffusion.from_pretrained(tmp_path)
    assert type(loaded.generation_config) is FlexGenerationConfig
    assert loaded.generation_config == model.generation_config
    torch.testing.assert_close(loaded.generate(PROMPTS).sequences, model.generate(PROMPTS).sequences)
    assert len(loaded.generate(PROMPTS, return_trace=True).trace) == 6 + 1  # the saved steps are used

    replaced = FlexMDMForMaskedDiffusion.from_pretrained(
        tmp_path, generation_config=FlexGenerationConfig(steps=9)
    )
    assert replaced.generation_config.steps == 9
    with pytest.raises(TypeError, match="takes generation_config as a FlexGenerationConfig"):
        FlexMDMForMaskedDiffusion.from_pretrained(tmp_path, generation_config=MDMGenerationConfig())


def test_llada_saves_and_loads_its_generation_config(tmp_path):
    model = tiny_llada(seed=4)
    model.generation_config = MDMGenerationConfig(steps=8, gen_length=16, block_length=8, cfg_scale=0.5)
    model.save_pretrained(tmp_path)
    loaded = LLaDAModelLM.from_pretrained(tmp_path)
    assert loaded.generation_config == model.generation_config
    assert loaded.generate([[5, 6]]).lengths.tolist() == [2 + 16]


def test_a_published_llada_generation_config_with_token_ids_only_loads(tmp_path):
    folder = save_tiny_llada_checkpoint(tmp_path / "llada")
    published = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    (folder / "generation_config.json").write_text(json.dumps(published))
    model = LLaDAModelLM.from_pretrained(folder)
    assert type(model.generation_config) is MDMGenerationConfig
    assert (model.generation_config.steps, model.generation_config.eos_token_id) == (128, 1)
    no_file = save_tiny_llada_checkpoint(tmp_path / "bare")
    assert LLaDAModelLM.from_pretrained(no_file).generation_config == MDMGenerationConfig()


def test_an_invalid_saved_generation_config_is_named(tmp_path):
    tiny_flexmdm(seed=5).save_pretrained(tmp_path)
    file = tmp_path / "generation_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "steps": 0}))
    with pytest.raises(
        ValueError, match=r"generation_config.json is not a valid FlexGenerationConfig .*steps"
    ):
        FlexMDMForMaskedDiffusion.from_pretrained(tmp_path)
    file.write_text("{not json")
    with pytest.raises(ValueError, match=r"generation_config.json is not a valid FlexGenerationConfig"):
        FlexMDMForMaskedDiffusion.from_pretrained(tmp_path)


def test_generate_text_picks_the_sampler_of_the_models_config(tokenizer):
    model = tiny_llada(tokenizer, seed=6)
    model.generation_config = MDMGenerationConfig(steps=4, gen_length=4, block_length=4)
    texts = generate_text(model, tokenizer, ["The quick"])  # generate_flex would raise a TypeError here
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_transformers_style_arguments_get_a_hint():
    model = tiny_flexmdm(seed=7)
    with pytest.raises(ValueError, match="max_new_tokens: a FlexMDM chooses the response length"):
        model.generate(PROMPTS, max_new_tokens=20)
    with pytest.raises(ValueError, match="max_new_tokens: the response length is gen_length"):
        tiny_llada(seed=7).generate(PROMPTS, max_new_tokens=20)
