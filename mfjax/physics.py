"""Energy -> forces and stress by one ``jax.grad`` with strain on the edge vectors.

The model outputs atomic energies only. With a per-graph strain eps [G, 3, 3] applied to every
edge vector of its graph, ``r -> r (I + eps)`` (cell and positions deformed together, as in glp),

    forces  F_n  = -dE/dR_n                 [N, 3]
    stress  s_g  = (1 / V_g) dE_g/d eps_g   [G, 3, 3]   (ASE sign: positive = tensile)

both from ONE reverse pass of ``sum_g E_g``. Graphs with zero volume (molecules, padding graphs)
get a zero stress. The same ``energy_and_derivatives`` serves host-built graphs and jax-md
neighbour lists: pass an ``edge_vector_fn(positions, strain) -> [E, 3]`` built from the jax-md
displacement function.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from mfjax.data.graph import Graph, edge_vectors, node_graph_index, num_graphs, num_nodes, volume

Array = jax.Array
#: ``apply_fn(variables, graph, edge_vectors [E, 3]) -> atomic energies [N]`` (0 on padding nodes).
ApplyFn = Callable[[Any, Graph, Array], Array]
#: ``edge_vector_fn(positions [N, 3], strain [G, 3, 3]) -> edge vectors [E, 3]``.
EdgeVectorFn = Callable[[Array, Array], Array]


def graph_energies(apply_fn: ApplyFn, variables: Any, graph: Graph, edge_vectors: Array) -> Array:
    """[G] total energy per graph: segment sum of the atomic energies (padding graphs get 0)."""
    atomic = apply_fn(variables, graph, edge_vectors)
    assert atomic.shape == (num_nodes(graph),), atomic.shape
    return jax.ops.segment_sum(atomic, node_graph_index(graph), num_segments=num_graphs(graph))


def energy_and_derivatives(
    apply_fn: ApplyFn,
    variables: Any,
    graph: Graph,
    positions: Array | None = None,
    *,
    compute_stress: bool = True,
    edge_vector_fn: EdgeVectorFn | None = None,
) -> tuple[Array, Array, Array | None]:
    """Energies and their derivatives from one ``jax.grad``.

    positions: [N, 3] (default ``graph.nodes.positions``); edge_vector_fn: how edge vectors follow
    from (positions, strain) (default ``graph.edge_vectors``).
    Returns (energy [G], dE/dR [N, 3], dE/d eps [G, 3, 3] or None without stress).
    """
    pos = graph.nodes.positions if positions is None else positions
    vector_fn = (lambda p, eps: edge_vectors(graph, p, eps)) if edge_vector_fn is None else edge_vector_fn
    strain = jnp.zeros((num_graphs(graph), 3, 3), pos.dtype)

    def total(p: Array, eps: Array) -> tuple[Array, Array]:
        energies = graph_energies(apply_fn, variables, graph, vector_fn(p, eps))
        return jnp.sum(energies), energies

    if compute_stress:
        (d_pos, d_strain), energies = jax.grad(total, argnums=(0, 1), has_aux=True)(pos, strain)
    else:
        d_pos, energies = jax.grad(lambda p: total(p, strain), has_aux=True)(pos)
        d_strain = None
    assert d_pos.shape == pos.shape and energies.shape == (num_graphs(graph),)
    return energies, d_pos, d_strain


def stress_from_strain_derivative(d_strain: Array, volume: Array) -> Array:
    """[G, 3, 3] stress = dE/d eps / V, 0 where V = 0 (the division is guarded)."""
    positive = volume > 0.0
    safe = jnp.where(positive, volume, 1.0)
    return jnp.where(positive[:, None, None], d_strain / safe[:, None, None], 0.0)


def predict(
    apply_fn: ApplyFn, variables: Any, graph: Graph, *, compute_stress: bool = True
) -> dict[str, Array]:
    """{"energy": [G] eV, "forces": [N, 3] eV/Å, "stress": [G, 3, 3] eV/Å^3 (ASE sign)}.

    "stress" is left out when ``compute_stress`` is False. Forces are 0 on padding nodes, energy
    and stress are 0 on padding graphs.
    """
    energies, d_pos, d_strain = energy_and_derivatives(
        apply_fn, variables, graph, compute_stress=compute_stress
    )
    out = {"energy": energies, "forces": -d_pos}
    if compute_stress:
        out["stress"] = stress_from_strain_derivative(d_strain, volume(graph))
    return out
