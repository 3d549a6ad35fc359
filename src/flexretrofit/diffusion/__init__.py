"""Pure tensor math of FlexMDM: time schedules (``schedules``), the forward process (``interpolant``: the joint
interpolant, stratified times, the MASK targets) and the loss (``loss``).

Nothing here knows about models, tokenizers or files.
"""

from flexretrofit.diffusion.interpolant import (
    IGNORE_INDEX,
    InterpolantSample,
    masked_positions_and_targets,
    sample_interpolant,
    stratified_times,
)
from flexretrofit.diffusion.loss import FlexMDMLoss, flexmdm_loss, mdm_loss, poisson_bregman
from flexretrofit.diffusion.schedules import (
    SCHEDULES,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    build_schedule,
    register_schedule,
)

__all__ = [
    "IGNORE_INDEX",
    "SCHEDULES",
    "CosineSchedule",
    "FlexMDMLoss",
    "GeometricSchedule",
    "InterpolantSample",
    "LinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "build_schedule",
    "flexmdm_loss",
    "masked_positions_and_targets",
    "mdm_loss",
    "poisson_bregman",
    "register_schedule",
    "sample_interpolant",
    "stratified_times",
]
