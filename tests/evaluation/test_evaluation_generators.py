import pytest
import torch

from flexretrofit.data.formats import BOUNDARY_TOKEN, CodeInfillFormat, GSM8KFormat
from flexretrofit.evaluation.generators import (
    PromptIds,
    SamplerGenerator,
    build_generation_config,
    completions_from_output,
    generation_settings,
    gsm8k_prompt_ids,
    infill_prompt_ids,
    tokens_to_ids,
)
from flexretrofit.sampling import FlexGenerationConfig, GenerationOutput, MDMGenerationConfig, generate_flex
from flexretrofit.testing import build_tiny_tokenizer, tiny_flexmdm, tiny_llada


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def flexmdm(tokenizer):
    return tiny_flexmdm(tokenizer, seed=0)


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _output(rows, prefix_lengths, suffix_lengths, pad_id, middles=None):
    width = max(len(row) for row in rows)
    sequences = torch.full((len(rows), width), pad_id)
    for b, row in enumerate(rows):
        sequences[b, : len(row)] = torch.tensor(row)
    return GenerationOutput(
        sequences=sequences,
        lengths=torch.tensor([len(row) for row in rows]),
        prompt_lengths=torch.tensor(prefix_lengths),
        suffix_lengths=torch.tensor(suffix_lengths),
        middles=middles,
    )


def test_infill_completion_is_taken_by_token_position_not_by_string_search(tokenizer, flexmdm, patch_sampler):
    # The middle repeats a prefix line and the suffix repeats it again: searching the decoded text for
    # the suffix (or the prefix) finds the wrong place.
    prefix, middle, suffix = "a = 1\nb = 2\n", "b = 2\n", "b = 2\n"
    prefix_ids, middle_ids, suffix_ids = (_encode(tokenizer, text) for text in (prefix, middle, suffix))
    row = prefix_ids + middle_ids + suffix_ids
    calls = []

    def stub_infill(model, prefixes, suffixes, config, **kwargs):
        calls.append((prefixes, suffixes, kwargs))
        return _output([row], [len(prefix_ids)], [len(suffix_ids)], tokenizer.pad_token_id, [middle_ids])

    patch_sampler("flexmdm", "infill", stub_infill)
    generate = SamplerGenerator(flexmdm, tokenizer, FlexGenerationConfig(steps=2), infilling=True)
    [generation] = generate([PromptIds(tuple(prefix_ids), tuple(suffix_ids), seed=7)])

    full = tokenizer.decode(row)
    assert full[len(prefix) : full.find(suffix)] != middle  # what a string search would return
    assert generation.text == middle
    assert generation.num_tokens == len(middle_ids)
    assert calls[0][2] == {"row_seeds": [7]}


def test_generated_response_is_what_follows_the_prompt(tokenizer, flexmdm, patch_sampler):
    prompt_ids = _encode(tokenizer, "The answer is 12.")
    response_ids = _encode(tokenizer, " 12.")

    def stub_generate(model, prompts, attention_mask, config, **kwargs):
        return _output([prompt_ids + response_ids], [len(prompt_ids)], [0], tokenizer.pad_token_id)

    patch_sampler("flexmdm", "generate", stub_generate)
    generate = SamplerGenerator(flexmdm, tokenizer, FlexGenerationConfig(steps=2), infilling=False)
    [generation] = generate([PromptIds(tuple(prompt_ids))])
    assert generation.text == " 12."
    assert generation.num_tokens == len(response_ids)


def test_a_sampler_output_that_moved_the_prompt_is_an_error(tokenizer, flexmdm, patch_sampler):
    prompt_ids = _encode(tokenizer, "def f(x):\n")

    def shifted(model, prompts, attention_mask, config, **kwargs):
        row = [tokenizer.bos_token_id, *prompt_ids, *prompt_ids]
        return _output([row], [len(prompt_ids)], [0], tokenizer.pad_token_id)

    patch_sampler("flexmdm", "generate", shifted)
    generate = SamplerGenerator(flexmdm, tokenizer, FlexGenerationConfig(steps=2), infilling=False)
    with pytest.raises(RuntimeError, match="by position"):
        generate([PromptIds(tuple(prompt_ids))])


def test_completions_need_middles_when_infilling(tokenizer):
    output = _output([[1, 2, 3]], [1], [1], tokenizer.pad_token_id, middles=None)
    with pytest.raises(ValueError, match="middles"):
        completions_from_output(output, tokenizer, infilling=True)


def test_gsm8k_prompt_is_the_training_layout(tokenizer):
    question = "A box holds 3 rows of 5 pens. How many pens?"
    assert gsm8k_prompt_ids(tokenizer, question) == GSM8KFormat(tokenizer).prompt_ids(question)
    few_shot = gsm8k_prompt_ids(tokenizer, question, style="few_shot")
    assert few_shot[0] == tokenizer.bos_token_id and question in tokenizer.decode(few_shot)
    with pytest.raises(ValueError, match="prompt style"):
        gsm8k_prompt_ids(tokenizer, question, style="zero")
    # A model tuned with another instruction is evaluated with that instruction.
    custom = gsm8k_prompt_ids(tokenizer, question, system_prompt="Solve it step by step.")
    assert custom == GSM8KFormat(tokenizer, system_prompt="Solve it step by step.").prompt_ids(question)
    assert custom != gsm8k_prompt_ids(tokenizer, question)


def test_infill_prompt_is_the_training_layout_split_between_the_markers(tokenizer):
    prefix, suffix = "def f(x):\n", "    return y\n"
    prefix_ids, suffix_ids = infill_prompt_ids(tokenizer, prefix, suffix, instruction="Add one.")
    encoded = CodeInfillFormat(tokenizer).encode("Add one.", prefix, "", suffix)["input_ids"]
    boundary = tokenizer.convert_tokens_to_ids(BOUNDARY_TOKEN)
    assert prefix_ids + suffix_ids == encoded
    assert prefix_ids[-1] == boundary and suffix_ids[0] == boundary
    assert tokenizer.decode(suffix_ids[1:]) == suffix

    plain_prefix, plain_suffix = infill_prompt_ids(tokenizer, prefix, suffix, layout="plain")
    assert (plain_prefix, plain_suffix) == (_encode(tokenizer, prefix), _encode(tokenizer, suffix))


def test_flex_rows_do_not_depend_on_their_batch(tokenizer, flexmdm):
    config = FlexGenerationConfig(steps=6, confidence="prob_diff", max_length=120)
    generate = SamplerGenerator(flexmdm, tokenizer, config, infilling=False)
    prompts = [
        PromptIds(tuple(_encode(tokenizer, "Question: 2 + 3?")), seed=11),
        PromptIds(tuple(_encode(tokenizer, "Tom has 15 marbles and gives 4 away.")), seed=12),
    ]
    together = generate(prompts)
    alone = [generate([prompt])[0] for prompt in prompts]
    assert together == alone
    direct = generate_flex(flexmdm, [list(p.prefix) for p in prompts], None, config, row_seeds=[11, 12])
    assert [g.num_tokens for g in together] == [len(ids) for ids in direct.generated_ids()]
    assert generate(prompts[:1]) != generate([PromptIds(prompts[0].prefix, seed=99)])


def test_infill_middles_never_hold_suppressed_boundary(tokenizer, flexmdm):
    boundary = tokenizer.convert_tokens_to_ids(BOUNDARY_TOKEN)
    config = FlexGenerationConfig(steps=6, suppress_tokens=[boundary], max_length=150)
    prefix_ids, suffix_ids = infill_prompt_ids(tokenizer, "def f(x):\n", "    return x\n")
    generate = SamplerGenerator(flexmdm, tokenizer, config, infilling=True, skip_special_tokens=False)
    outputs = generate([PromptIds(tuple(prefix_ids), tuple(suffix_ids), seed=s) for s in range(3)])
    assert any(g.num_tokens > 0 for g in outputs)
    assert all(BOUNDARY_TOKEN not in g.text for g in outputs)


def test_mdm_generator_runs_llada_and_reports_its_prompt_limit(tokenizer):
    model = tiny_llada(tokenizer, seed=0)
    config = MDMGenerationConfig(steps=4, gen_length=8, block_length=8, suppress_tokens=[])
    generate = SamplerGenerator(model, tokenizer, config, infilling=False)
    assert generate.max_prompt_tokens == model.config.max_sequence_length - 8
    assert generate.sampler_name == "generate_mdm"
    [generation] = generate([PromptIds(tuple(_encode(tokenizer, "2 + 2 =")), seed=3)])
    assert 0 <= generation.num_tokens <= 8
    assert generate.settings()["gen_length"] == 8 and generate.settings()["method"] == "mdm"


def test_flex_sampler_refuses_a_llada_model(tokenizer):
    with pytest.raises(ValueError, match="needs a FlexMDM"):
        SamplerGenerator(tiny_llada(tokenizer), tokenizer, FlexGenerationConfig(steps=2), infilling=False)


def test_generation_config_from_settings_checks_field_names():
    config = build_generation_config("flex", {"steps": 8, "confidence": "prob_diff", "seed": 3})
    assert isinstance(config, FlexGenerationConfig)
    settings = generation_settings(config)
    assert settings["steps"] == 8 and settings["confidence"] == "prob_diff" and "row_seeds" not in settings
    assert isinstance(
        build_generation_config("mdm", {"gen_length": 16, "block_length": 8, "steps": 16}),
        MDMGenerationConfig,
    )
    with pytest.raises(ValueError, match="gen_length"):
        build_generation_config("flex", {"gen_length": 16})
    with pytest.raises(ValueError, match="'ar' is not a method"):
        build_generation_config("ar", {})


def test_tokens_are_given_by_their_text(tokenizer):
    assert tokens_to_ids(tokenizer, ["<|eot_id|>"]) == [tokenizer.convert_tokens_to_ids("<|eot_id|>")]
    with pytest.raises(ValueError, match="not tokens"):
        tokens_to_ids(tokenizer, ["<|no_such_token|>"])
