"""The training table: one row per method, looked up by name (``model.kind``) or by the trained model's config."""

import pytest

from flexretrofit.data import FlexMDMCollator, MDMCollator
from flexretrofit.diffusion import build_schedule
from flexretrofit.methods import METHODS
from flexretrofit.models import FlexMDMConfig, FlexMDMForMaskedDiffusion, LLaDAModelLM
from flexretrofit.testing import tiny_llada_config
from flexretrofit.training import TRAINING_METHODS, FlexMDMObjective, MDMObjective, training_method


def test_one_row_per_method():
    assert tuple(TRAINING_METHODS) == METHODS
    assert all(name == row.name for name, row in TRAINING_METHODS.items())


def test_rows_name_the_pieces_of_each_method():
    flex, mdm = training_method("flexmdm"), training_method("mdm")
    assert (flex.model_class, flex.collator_class, flex.objective_class) == (
        FlexMDMForMaskedDiffusion,
        FlexMDMCollator,
        FlexMDMObjective,
    )
    assert (mdm.model_class, mdm.collator_class, mdm.objective_class) == (
        LLaDAModelLM,
        MDMCollator,
        MDMObjective,
    )
    assert flex.new_modules and not flex.fixed_length
    assert mdm.fixed_length and not mdm.new_modules


def test_a_trained_model_config_picks_its_row():
    llada = tiny_llada_config()
    assert training_method(llada).name == "mdm"
    assert training_method(FlexMDMConfig(backbone_config=llada)).name == "flexmdm"


def test_old_spellings_read_and_unknown_names_fail_in_one_line():
    assert training_method("flex") is TRAINING_METHODS["flexmdm"]
    with pytest.raises(ValueError, match=r"^model.kind='gpt' is not a method; use one of flexmdm, mdm$"):
        training_method("gpt")


def test_collators_and_objectives_read_the_model_config():
    llada = tiny_llada_config()
    flex_config = FlexMDMConfig(backbone_config=llada)
    collator = FlexMDMCollator.for_model(flex_config, rank=1, world_size=2, seed=7)
    assert (collator.pad_token_id, collator.mask_token_id, collator.rank, collator.seed) == (
        llada.pad_token_id,
        llada.mask_token_id,
        1,
        7,
    )
    assert repr(collator.insertion_schedule) == repr(build_schedule(flex_config.insertion_schedule))
    assert repr(collator.unmask_schedule) == repr(build_schedule(flex_config.unmask_schedule))
    mdm = MDMCollator.for_model(llada, world_size=4, rank=3)
    assert (mdm.pad_token_id, mdm.mask_token_id, mdm.rank, mdm.world_size) == (
        llada.pad_token_id,
        llada.mask_token_id,
        3,
        4,
    )
    objective = FlexMDMObjective.for_model(flex_config, insertion_weighting="constant")
    assert objective.insertion_weighting == "constant"
    assert isinstance(MDMObjective.for_model(llada), MDMObjective)
