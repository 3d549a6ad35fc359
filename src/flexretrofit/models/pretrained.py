"""Old import path: :class:`DiffusionModelMixin` lives in :mod:`.diffusion_mixin`, :func:`resolve_dtype` in
:mod:`.auto` (loading)."""

from flexretrofit.models.auto import resolve_dtype
from flexretrofit.models.diffusion_mixin import DiffusionModelMixin

__all__ = ["DiffusionModelMixin", "resolve_dtype"]
