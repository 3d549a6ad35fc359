import dataclasses
import functools

import pytest

from flexretrofit.sampling.methods import SAMPLING_METHODS


@pytest.fixture
def patch_sampler(monkeypatch):
    """``patch_sampler(method, role, stub)``: the sampling table's ``generate`` or ``infill`` of ``method``
    becomes ``stub`` (under the real function's name, which summaries record) for one test; returns the
    real function."""

    def patch(method, role, stub):
        row = SAMPLING_METHODS[method]
        real = getattr(row, role)
        replaced = dataclasses.replace(row, **{role: functools.wraps(real)(stub)})
        monkeypatch.setitem(SAMPLING_METHODS, method, replaced)
        return real

    return patch
