"""mfjax: multi-fidelity equivariant machine-learning interatomic potentials in JAX."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, precision: str = "float32"):
    """Load an exported model directory (see ``mfjax.inference``)."""
    from mfjax.inference import load_model as _load

    return _load(path, precision=precision)


__all__ = ["__version__", "load_model"]
