"""models/auto.py: the model_type table, loading a config by type, and the retrofit case."""

import pytest
from transformers import AutoConfig, AutoModel

import flexretrofit  # noqa: F401  (registers the classes with the transformers Auto classes)
from flexretrofit.models import CheckpointError, FlexMDMConfig, FlexMDMForMaskedDiffusion, LLaDAConfig
from flexretrofit.models.auto import (
    MODEL_CLASSES,
    MODEL_TYPE_METHODS,
    default_method,
    load_config,
    method_config,
    method_model_class,
    model_class,
    needs_retrofit,
    resolve_dtype,
)
from flexretrofit.testing import save_tiny_llada_checkpoint


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory):
    return save_tiny_llada_checkpoint(tmp_path_factory.mktemp("auto") / "llada")


def test_every_model_type_has_a_class_and_a_default_method():
    assert set(MODEL_CLASSES) == set(MODEL_TYPE_METHODS) == {"llada", "flexmdm"}
    assert (default_method("llada"), default_method("flexmdm")) == ("mdm", "flexmdm")
    for model_type, cls in MODEL_CLASSES.items():
        assert cls.config_class.model_type == model_type
        assert AutoConfig.for_model(model_type).__class__ is cls.config_class
        assert AutoModel._model_mapping[cls.config_class] is cls


def test_each_method_has_its_native_class():
    assert method_model_class("flexmdm") is FlexMDMForMaskedDiffusion
    assert method_model_class("flex") is FlexMDMForMaskedDiffusion  # the old spelling
    assert method_model_class("mdm") is MODEL_CLASSES["llada"]
    with pytest.raises(ValueError, match="not a method"):
        method_model_class("ar")


def test_an_unknown_model_type_is_one_line_naming_the_source():
    with pytest.raises(
        CheckpointError, match=r"^ckpt holds a model of type 'bert'; this project loads"
    ) as info:
        model_class("bert", "ckpt")
    assert "\n" not in str(info.value)


def test_only_a_llada_run_as_a_flexmdm_is_a_retrofit():
    assert needs_retrofit("llada", "flexmdm") and needs_retrofit("llada", "flex")  # the old spelling reads
    assert not needs_retrofit("llada", "mdm")
    assert not needs_retrofit("flexmdm", "flexmdm") and not needs_retrofit("flexmdm", "mdm")


def test_load_config_reads_the_class_config_without_weights(llada_folder):
    config = load_config(llada_folder)
    assert type(config) is LLaDAConfig
    assert method_config(config, "mdm") is config
    retrofit = method_config(config, "flexmdm", {"modulation_group_size": 2})
    assert type(retrofit) is FlexMDMConfig and retrofit.modulation_group_size == 2
    assert model_class(retrofit.model_type) is FlexMDMForMaskedDiffusion
    with pytest.raises((TypeError, ValueError)):
        method_config(config, "flexmdm", {"modulation_group_size": 0})


def test_the_old_import_path_of_the_mixin_still_works():
    from flexretrofit.models import pretrained
    from flexretrofit.models.diffusion_mixin import DiffusionModelMixin

    assert pretrained.DiffusionModelMixin is DiffusionModelMixin
    assert pretrained.resolve_dtype is resolve_dtype
