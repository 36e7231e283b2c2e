"""``ModelSpec``: everything that builds the network, and the one place that resolves fidelity names.

A spec is (architecture, species, fidelities, mean neighbour count). It builds the flax module
(``Potential`` is constructed here and nowhere else), initialises variables, and turns a fidelity
name into the index that graphs carry (``fidelity_index``; rules in ``mfjax.data.fidelity``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Hashable, Sequence

import jax
import numpy as np

from mfjax.data import fidelity as fidelity_names
from mfjax.data.graph import Graph
from mfjax.nn.config import ModelConfig
from mfjax.nn.model import Potential, fidelity_weight_mask, init_variables
from mfjax.utils.configtools import from_dict, to_dict

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """What builds a ``Potential``.

    config: architecture (its ``cutoff`` is the model's cutoff, Å); species: atomic numbers the
    model knows (index = position); fidelities: fidelity names (index = position, the order of
    ``data.fidelities``); avg_num_neighbors: the convolution's normalisation.
    """

    config: ModelConfig
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    avg_num_neighbors: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        object.__setattr__(self, "fidelities", fidelity_names.check_distinct(self.fidelities, "the model"))
        object.__setattr__(self, "avg_num_neighbors", float(self.avg_num_neighbors))

    # ---- identity ----------------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        return float(self.config.cutoff)

    @property
    def key(self) -> Hashable:
        """Everything that changes the computation (fidelity *names* do not): equal keys share a
        compiled step."""
        return (self.config, self.species, len(self.fidelities), self.avg_num_neighbors)

    # ---- fidelities --------------------------------------------------------------------------
    def fidelity_index(self, name: str | None = None) -> int:
        """Index of fidelity ``name`` (None only for a single-fidelity model); FidelityError lists
        the available names."""
        return fidelity_names.resolve(self.fidelities, name)

    @property
    def fidelity_map(self) -> dict[str, int]:
        """{name: index}, as the graph builders take it."""
        return {name: k for k, name in enumerate(self.fidelities)}

    def with_fidelities(self, fidelities: Sequence[str]) -> "ModelSpec":
        return replace(self, fidelities=tuple(fidelities))

    # ---- the network -------------------------------------------------------------------------
    @cached_property
    def module(self) -> Potential:
        """The flax module (``Potential``); ``module.apply(variables, graph, vectors) -> [N]``."""
        return Potential(self.config, self.species, self.fidelities, self.avg_num_neighbors)

    def init(self, seed: int, example: Graph, e0: Any = None, scale: float = 1.0) -> dict:
        """Fresh host-side variables {"params", "constants": {"e0" [F, S], "scale"}}; ``example`` is
        any padded graph (its float dtype sets the variables' dtype)."""
        example = jax.tree.map(np.asarray, example)
        return jax.device_get(init_variables(self.module, jax.random.PRNGKey(seed), example, e0=e0, scale=scale))

    def fidelity_weight_mask(self, params: Any) -> Any:
        """Pytree like ``params``: 1 on the fidelity-specific weights (``mfjax.nn.model.fidelity_weight_mask``:
        one-hot rows of the conditioned linears and of the node embedding, heads), 0 elsewhere."""
        return fidelity_weight_mask(params, self.config, len(self.fidelities))

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"model": to_dict(self.config), "species": list(self.species), "fidelities": list(self.fidelities),
                "cutoff": self.cutoff, "avg_num_neighbors": self.avg_num_neighbors}

    @classmethod
    def from_dict(cls, manifest: dict) -> "ModelSpec":
        config = from_dict(ModelConfig, manifest["model"], "model")
        return cls(config, tuple(manifest["species"]), tuple(manifest["fidelities"]),
                   float(manifest["avg_num_neighbors"]))
