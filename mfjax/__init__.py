"""mfjax: multi-fidelity equivariant machine-learning interatomic potentials in JAX."""

from __future__ import annotations

from mfjax._version import __version__
from mfjax.model import Model, ModelSpec, load_model

__all__ = ["__version__", "Model", "ModelSpec", "load_model"]
