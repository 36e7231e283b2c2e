"""Predictions on a pool of candidate structures: every member's energy and forces at the fidelities
asked for, and one invariant feature vector per structure.

The features are the model's invariant node features after its last interaction block (the C
even scalars SevenNet's last layer keeps, ``mfjax.nn.model.block_irreps``), read with flax's
``capture_intermediates`` (no change to the network) and summed over each structure's atoms: [M, C].
For an ensemble they come from member 0; a single potential counts as an ensemble of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.batching import pad_to_bucket, structures_to_graph
from mfjax.data.graph import (
    cast_floats,
    edge_vectors,
    node_graph_index,
    node_mask,
    num_graphs,
    with_fidelity,
)
from mfjax.data.structures import structure_from_atoms
from mfjax.errors import ConfigError
from mfjax.model import Model
from mfjax.model.calculator import check_species
from mfjax.model.uncertainty import member_predictions, member_variables, stack_members

__all__ = ["PoolPredictions", "predict_pool", "structure_features"]


@dataclass
class PoolPredictions:
    """energy: {fidelity: [K, M]} eV per member; forces: {fidelity: [M] arrays [K, n, 3]} eV/Å;
    features: [M, C] summed invariant node features (at ``features_fidelity``); n_atoms: [M]."""

    energy: dict[str, np.ndarray]
    forces: dict[str, list[np.ndarray]]
    features: np.ndarray
    n_atoms: np.ndarray
    features_fidelity: str


def _last_block(config) -> str:
    return f"block_{config.num_layers - 1}"


def structure_features(module, variables, graph, last_block: str):
    """[G, C]: the invariant output of ``last_block`` (captured), summed over each graph's real atoms."""
    vectors = edge_vectors(graph)
    _, state = module.apply(variables, graph, vectors, mutable=["intermediates"],
                            capture_intermediates=lambda mdl, name: mdl.name == last_block and name == "__call__")
    x = state["intermediates"][last_block]["__call__"][0]
    x = getattr(x, "array", x)  # e3nn IrrepsArray [N, C x 0e] -> its array
    x = jnp.where(node_mask(graph)[:, None], x, 0.0)
    return jax.ops.segment_sum(x, node_graph_index(graph), num_segments=num_graphs(graph))


def _pool_step(module, last_block: str, variables, graph, with_features: bool):
    members = member_predictions(module.apply, variables, graph, compute_stress=False)
    features = structure_features(module, member_variables(variables, 0), graph, last_block) if with_features else None
    return members["energy"], members["forces"], features


_STEPS: dict = {}  # spec.key -> the jitted pool step (a loop selects every round with one architecture)


def _jitted_step(model: Model):
    if model.spec.key not in _STEPS:
        _STEPS[model.spec.key] = jax.jit(partial(_pool_step, model.spec.module, _last_block(model.config)),
                                         static_argnums=2)
    return _STEPS[model.spec.key]


def predict_pool(model: Model, frames: Sequence, fidelities: Sequence[str], *, features_fidelity: str | None = None,
                 batch_size: int = 16) -> PoolPredictions:
    """Members' energies and forces of ``frames`` (``ase.Atoms``) at each of ``fidelities`` and their
    features at ``features_fidelity`` (default: the first of ``fidelities``)."""
    if model.base is not None:
        raise ConfigError("mfjax select: a Δ model is not supported; give a plain or ensemble potential")
    for name in fidelities:
        model.fidelity_index(name)  # FidelityError lists the names
    feat_fid = features_fidelity or fidelities[0]
    for k, atoms in enumerate(frames):
        check_species(atoms.numbers, model.species, f"pool structure {k}")
    variables = model.variables if model.is_ensemble else stack_members([jax.device_get(model.variables)])
    variables = jax.device_put(variables)
    dtype = np.dtype(model.dtype)
    step = _jitted_step(model)
    energy = {f: [] for f in fidelities}
    forces: dict[str, list[np.ndarray]] = {f: [] for f in fidelities}
    features = []
    n_atoms = np.array([len(a) for a in frames], int)
    for start in range(0, len(frames), batch_size):
        chunk = [structure_from_atoms(a, feat_fid) for a in frames[start : start + batch_size]]
        graph = structures_to_graph(chunk, model.cutoff, {feat_fid: 0})
        graph = pad_to_bucket(graph)
        graph = cast_floats(graph, dtype)
        offsets = np.concatenate([[0], np.cumsum([s.num_atoms for s in chunk])])
        for name in fidelities:
            e, f, x = jax.device_get(step(variables, with_fidelity(graph, model.fidelity_index(name)),
                                          name == feat_fid))
            energy[name].append(np.asarray(e)[:, : len(chunk)])
            forces[name].extend(np.asarray(f)[:, offsets[g] : offsets[g + 1]] for g in range(len(chunk)))
            if x is not None:
                features.append(np.asarray(x)[: len(chunk)])
    if feat_fid not in fidelities:
        raise ConfigError(f"features_fidelity {feat_fid!r} must be one of the predicted fidelities {list(fidelities)}")
    return PoolPredictions({f: np.concatenate(v, axis=1) for f, v in energy.items()}, forces,
                           np.concatenate(features, axis=0).astype(np.float64), n_atoms, feat_fid)
