"""Untrained real models for tests: the ``small`` preset with random weights, as a ``Model``."""

from __future__ import annotations

import ase.build
import numpy as np

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.graph import num_edges, num_nodes
from mfjax.data.structures import structure_from_atoms
from mfjax.model import Model, ModelSpec
from mfjax.nn.presets import load_preset


def random_potential_model(
    species: tuple[int, ...] = (1, 6, 8, 14),
    fidelities: tuple[str, ...] = ("pbe", "r2scan"),
    cutoff: float = 4.0,
    num_layers: int = 2,
    seed: int = 0,
    scale: float = 0.5,
    **overrides,
) -> Model:
    """An untrained ``Potential`` (preset "small") with random weights and E0 = -1 eV.

    Exercises the real model code path without a trained bundle; ``overrides`` go to the preset
    (e.g. ``hidden_irreps="8x0e+4x1e", lmax=1`` for a fast-compiling model).
    """
    config = load_preset("small", cutoff=float(cutoff), num_layers=int(num_layers), **overrides)
    spec = ModelSpec(config, tuple(species), tuple(fidelities), 10.0)
    atoms = ase.build.molecule("CH4")
    atoms.numbers[:] = species[0]
    graph = structures_to_graph([structure_from_atoms(atoms, fidelities[0])], cutoff, {fidelities[0]: 0})
    graph = pad_graph(graph, num_nodes(graph) + 1, num_edges(graph), 2)
    e0 = -np.ones((len(fidelities), len(species)))
    return Model(spec, spec.init(seed, graph, e0=e0, scale=scale))
