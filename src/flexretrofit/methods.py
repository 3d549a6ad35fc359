"""The method vocabulary: a model is trained and sampled either as a FlexMDM or as a fixed-length MDM.

One spelling everywhere a user names the method (configs, command-line flags, saved results):
``"flexmdm"`` or ``"mdm"``. Each layer keeps one table keyed by these names
(:data:`flexretrofit.sampling.methods.SAMPLING_METHODS`, :data:`flexretrofit.training.methods.TRAINING_METHODS`,
:data:`flexretrofit.models.auto.MODEL_CLASSES`); code elsewhere looks the method up instead of branching on it.

Old spellings still read: the sampler name ``"flex"`` (earlier ``--sampler`` flags, saved summaries and
generation settings) means ``"flexmdm"``.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["flexmdm", "mdm"]
METHODS: tuple[Method, ...] = get_args(Method)
OLD_SPELLINGS: dict[str, Method] = {"flex": "flexmdm"}


def method_name(value: object, *, key: str = "method") -> Method:
    """``value`` as one of :data:`METHODS`, reading the old spellings of :data:`OLD_SPELLINGS`.

    Raises:
        ValueError: any other value; the message names ``key`` and the choices.
    """
    if isinstance(value, str):
        name = OLD_SPELLINGS.get(value, value)
        if name in METHODS:
            return name  # type: ignore[return-value]
    raise ValueError(f"{key}={value!r} is not a method; use one of {', '.join(METHODS)}")
