"""Generation configs: defaults, save/load, keyword overrides on a copy, clear errors for bad values."""

import logging

import pytest
import torch

from flexretrofit.sampling import FlexGenerationConfig, MDMGenerationConfig
from flexretrofit.sampling.config import MAX_STEPS, resolve_generation_config


def test_flex_defaults_and_round_trip(tmp_path):
    config = FlexGenerationConfig(steps=64, confidence="prob_diff", sliding_window=True, row_seeds=[3, 4])
    assert config.max_length is None and config.temperature == 0.0 and config.do_sample is False
    assert (config.window_scale, config.max_window, config.bucket_size) == (15.0, 32, 16)
    config.save_pretrained(tmp_path)
    loaded = FlexGenerationConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FlexGenerationConfig)
    assert (loaded.steps, loaded.confidence, loaded.sliding_window, loaded.row_seeds) == (
        64,
        "prob_diff",
        True,
        [3, 4],
    )


def test_mdm_defaults_and_round_trip(tmp_path):
    config = MDMGenerationConfig(steps=8, gen_length=64, block_length=16, cfg_scale=0.5, eos_token_id=[1, 5])
    assert config.num_blocks == 4 and config.remasking == "low_confidence"
    config.save_pretrained(tmp_path)
    loaded = MDMGenerationConfig.from_pretrained(tmp_path)
    assert (loaded.steps, loaded.gen_length, loaded.cfg_scale, loaded.eos_token_id) == (8, 64, 0.5, [1, 5])


def test_overrides_apply_to_a_copy():
    base = FlexGenerationConfig(steps=32)
    resolved = resolve_generation_config(
        base, FlexGenerationConfig, {"steps": 8, "row_seeds": torch.tensor([1, 2])}
    )
    assert (resolved.steps, resolved.row_seeds, base.steps, base.row_seeds) == (8, [1, 2], 32, None)
    assert resolve_generation_config(None, MDMGenerationConfig, {}).steps == 128


def test_temperature_zero_means_argmax_without_a_transformers_warning(caplog):
    with caplog.at_level(logging.WARNING):
        FlexGenerationConfig(temperature=0.0)
        MDMGenerationConfig(temperature=0.0)
    assert "temperature" not in caplog.text
    assert FlexGenerationConfig(temperature=0.7).do_sample is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2.5), "steps must be an integer >= 1"),
        (dict(confidence="margin"), "unknown confidence method 'margin'; choose one of top_prob"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(window_scale=0), "window_scale must be > 0"),
        (dict(temperature=float("nan")), "temperature must be >= 0 and finite"),
        (dict(temperature=float("inf")), "temperature must be >= 0 and finite"),
        (dict(window_scale=float("inf")), "window_scale must be > 0 and finite"),
        (dict(max_window=0), "max_window must be an integer >= 1"),
        (dict(bucket_size=0), "bucket_size must be an integer >= 1"),
        (dict(max_length=0), "max_length must be an integer >= 1"),
        (dict(suppress_tokens=[-3]), "suppress_tokens must be a list"),
        (dict(row_seeds=["a"]), "row_seeds must be a list of integers"),
    ],
)
def test_flex_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlexGenerationConfig(**kwargs)
    with pytest.raises(ValueError, match=message):  # the same check when given as an override
        resolve_generation_config(None, FlexGenerationConfig, kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gen_length=100, block_length=32), "not a multiple of block_length"),
        (dict(gen_length=128, block_length=32, steps=6), "use a multiple of 4"),
        (dict(remasking="top_k"), "unknown remasking"),
        (dict(cfg_scale=-1), "cfg_scale must be >= 0"),
        (dict(cfg_scale=float("nan")), "cfg_scale must be >= 0 and finite"),
        (dict(steps=0), "steps must be an integer >= 1"),
    ],
)
def test_mdm_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MDMGenerationConfig(**kwargs)


def test_unknown_override_and_wrong_config_class_are_errors():
    with pytest.raises(ValueError, match=r"unknown generation option\(s\) \['stepz'\]"):
        resolve_generation_config(None, FlexGenerationConfig, {"stepz": 3})
    with pytest.raises(ValueError, match="unknown generation option"):
        resolve_generation_config(None, FlexGenerationConfig, {"top_k": 3})  # a transformers field we ignore
    with pytest.raises(ValueError, match="takes a FlexGenerationConfig"):
        resolve_generation_config(MDMGenerationConfig(), FlexGenerationConfig, {})


def test_steps_are_capped_and_an_mdm_takes_no_more_steps_than_tokens():
    for config_class in (FlexGenerationConfig, MDMGenerationConfig):
        with pytest.raises(ValueError, match=r"steps must be an integer >= 1 and <= 100000, got 1000000000"):
            config_class(steps=1_000_000_000)
        with pytest.raises(ValueError, match="temperature must be >= 0 and finite"):
            config_class(temperature="nan")  # text, as a command line gives it: no TypeError
    assert FlexGenerationConfig(steps=MAX_STEPS).steps == MAX_STEPS
    with pytest.raises(ValueError, match="steps=256 is more than gen_length=128"):
        MDMGenerationConfig(steps=256, gen_length=128, block_length=32)
    with pytest.raises(ValueError, match="steps=64 is more than gen_length=32"):
        resolve_generation_config(
            MDMGenerationConfig(steps=32, gen_length=32), MDMGenerationConfig, {"steps": 64}
        )
    assert MDMGenerationConfig(steps=128, gen_length=128).steps == 128
