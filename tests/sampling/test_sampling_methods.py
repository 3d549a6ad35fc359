"""sampling/methods.py: the sampling table, read by name (old spellings too), by config, or from a model."""

import pytest
import torch
from torch import nn

from flexretrofit.sampling import (
    SAMPLING_METHODS,
    FlexGenerationConfig,
    MDMGenerationConfig,
    build_generation_config,
    generate_flex,
    generate_mdm,
    infill,
    infill_mdm,
    sampling_method,
    sampling_method_of,
)
from flexretrofit.sampling.text import with_stop_ids
from flexretrofit.testing import build_tiny_tokenizer
from flexretrofit.utils import model_device


def test_the_table_holds_each_methods_config_and_samplers():
    flex, mdm = SAMPLING_METHODS["flexmdm"], SAMPLING_METHODS["mdm"]
    assert (flex.config_class, flex.generate, flex.infill) == (FlexGenerationConfig, generate_flex, infill)
    assert (mdm.config_class, mdm.generate, mdm.infill) == (MDMGenerationConfig, generate_mdm, infill_mdm)


def test_a_row_is_found_by_name_old_spelling_or_config():
    assert sampling_method("flexmdm") is sampling_method("flex") is SAMPLING_METHODS["flexmdm"]
    assert sampling_method(MDMGenerationConfig()) is SAMPLING_METHODS["mdm"]
    with pytest.raises(ValueError, match=r"^--method='diffusion' is not a method; use one of flexmdm, mdm$"):
        sampling_method("diffusion", key="--method")
    with pytest.raises(TypeError, match="method name or a generation config"):
        sampling_method(3)


def test_the_model_s_own_config_decides_unless_one_is_given():
    model = nn.Linear(2, 2)
    assert sampling_method_of(model) is SAMPLING_METHODS["flexmdm"]  # no sampler config: the default
    model.generation_config = MDMGenerationConfig()
    assert sampling_method_of(model) is SAMPLING_METHODS["mdm"]
    assert sampling_method_of(model, FlexGenerationConfig()) is SAMPLING_METHODS["flexmdm"]


def test_build_generation_config_names_the_unknown_fields():
    assert build_generation_config("flex", {"steps": 3}).steps == 3
    with pytest.raises(ValueError, match=r"\['gen_length'\] are not settings of the flexmdm sampler"):
        build_generation_config("flexmdm", {"gen_length": 4})


def test_only_a_sampler_with_stop_ids_gets_the_tokenizer_s():
    tokenizer = build_tiny_tokenizer()
    mdm, flex = SAMPLING_METHODS["mdm"], SAMPLING_METHODS["flexmdm"]
    added = with_stop_ids(mdm, tokenizer, {"steps": 4})
    assert added["steps"] == 4 and tokenizer.eos_token_id in added["eos_token_id"]
    assert with_stop_ids(mdm, tokenizer, {"eos_token_id": 7}) == {"eos_token_id": 7}
    assert with_stop_ids(mdm, tokenizer, {}, MDMGenerationConfig(eos_token_id=5)) == {}
    assert with_stop_ids(flex, tokenizer, {"steps": 4}) == {"steps": 4}


def test_model_device_keeps_its_old_import_path():
    from flexretrofit.sampling.flex import model_device as old_path

    assert old_path is model_device
    assert model_device(nn.Identity()) == torch.device("cpu")
