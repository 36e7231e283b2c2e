"""The one immutable graph pytree that every part of mfjax passes around.

A batch is a ``jraph.GraphsTuple`` (nodes, edges, senders, receivers, n_node, n_edge, globals), so
jraph utilities and user code that speak jraph work on it; its feature containers are typed flax
dataclasses with shape-documented fields, and the helpers (sizes, masks, edge vectors) are plain
functions of the graph.

Conventions
-----------
* Shapes: ``N`` nodes (atoms), ``E`` edges, ``G`` graphs (structures) in a (possibly padded) batch.
* Edge ``e`` carries a message from ``senders[e]`` (neighbour j) to ``receivers[e]`` (centre i). Its
  vector is ``r_ij = R_j - R_i + shifts[e] @ cell`` (SPEC §1): it points from the centre to the neighbour.
* Padding follows jraph: padding nodes and edges belong to padding graphs at the end of the batch;
  ``globals.graph_mask`` is False for them. Padding edges join a padding node to itself with a zero
  shift, so their vector is exactly zero: every layer guards zero-length edges.
* Labels use ASE units and the ASE stress sign (stress = (1/V) dE/d(strain), positive = tensile),
  as a full 3x3 tensor. A label that is absent is masked (mask False), its value set to 0 only as a
  placeholder that is never read unmasked.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import jraph
import numpy as np

Array = jax.Array


@flax.struct.dataclass
class NodeFeatures:
    """Per-atom arrays.

    positions: [N, 3] float, Å (Cartesian).
    species: [N] int32, atomic numbers Z (0 on padding nodes).
    forces: [N, 3] float, eV/Å force labels (0 where masked).
    forces_mask: [N] bool, True where the force label exists.
    """

    positions: Array
    species: Array
    forces: Array
    forces_mask: Array


@flax.struct.dataclass
class EdgeFeatures:
    """Per-edge arrays.

    shifts: [E, 3] float, integer lattice translations of the sender's image (in units of the cell).
    """

    shifts: Array


@flax.struct.dataclass
class GraphFeatures:
    """Per-structure arrays.

    cell: [G, 3, 3] float, lattice vectors as rows, Å (zeros for molecules).
    pbc: [G, 3] bool, periodic directions.
    fidelity: [G] int32, index of the fidelity (level of theory) of the labels.
    energy: [G] float, total energy label, eV (0 where masked).
    energy_mask: [G] bool.
    stress: [G, 3, 3] float, stress label, eV/Å^3, ASE sign (0 where masked).
    stress_mask: [G] bool.
    weight: [G, 3] float, per-structure loss weights for (energy, forces, stress)
        (dataset weight x fidelity weight); 0 on padding graphs.
    graph_mask: [G] bool, False on padding graphs.
    """

    cell: Array
    pbc: Array
    fidelity: Array
    energy: Array
    energy_mask: Array
    stress: Array
    stress_mask: Array
    weight: Array
    graph_mask: Array


#: The batch graph: a ``jraph.GraphsTuple`` whose ``nodes`` / ``edges`` / ``globals`` hold the typed
#: feature pytrees above; senders [E] int32 (neighbour j), receivers [E] int32 (centre i),
#: n_node [G] int32, n_edge [G] int32. jraph utilities (``jraph.segment_sum``,
#: ``jraph.get_graph_padding_mask``, ...) apply; the helpers below are plain functions of it.
Graph = jraph.GraphsTuple


# ---- sizes -----------------------------------------------------------------------------------
def num_nodes(graph: Graph) -> int:
    """N, padding included."""
    return graph.nodes.species.shape[0]


def num_edges(graph: Graph) -> int:
    """E, padding included."""
    return graph.senders.shape[0]


def num_graphs(graph: Graph) -> int:
    """G, padding graphs included."""
    return graph.n_node.shape[0]


# ---- index maps and masks --------------------------------------------------------------------
def node_graph_index(graph: Graph) -> Array:
    """[N] int32: the graph each node belongs to."""
    return jnp.repeat(jnp.arange(num_graphs(graph)), graph.n_node, total_repeat_length=num_nodes(graph))


def edge_graph_index(graph: Graph) -> Array:
    """[E] int32: the graph each edge belongs to."""
    return jnp.repeat(jnp.arange(num_graphs(graph)), graph.n_edge, total_repeat_length=num_edges(graph))


def node_mask(graph: Graph) -> Array:
    """[N] bool: True on real atoms."""
    return graph.globals.graph_mask[node_graph_index(graph)]


def edge_mask(graph: Graph) -> Array:
    """[E] bool: True on real edges."""
    return graph.globals.graph_mask[edge_graph_index(graph)]


# ---- geometry --------------------------------------------------------------------------------
def edge_vectors(graph: Graph, positions: Array | None = None, strain: Array | None = None) -> Array:
    """[E, 3] edge vectors r_ij = R_j - R_i + shift @ cell, optionally strained.

    positions: [N, 3] overrides ``nodes.positions`` (so forces can be taken w.r.t. it).
    strain: [G, 3, 3] symmetric or general displacement gradient; applied as r -> r (I + strain),
        i.e. to the cell and positions together, which is what the stress derivative needs.
    """
    pos = graph.nodes.positions if positions is None else positions
    edge_graph = edge_graph_index(graph)
    cell = graph.globals.cell[edge_graph]  # [E, 3, 3]
    offsets = jnp.einsum("ei,eij->ej", graph.edges.shifts.astype(pos.dtype), cell.astype(pos.dtype))
    vectors = pos[graph.senders] - pos[graph.receivers] + offsets
    if strain is not None:
        eye = jnp.eye(3, dtype=vectors.dtype)
        vectors = jnp.einsum("ei,eij->ej", vectors, eye + strain[edge_graph].astype(vectors.dtype))
    return vectors


def volume(graph: Graph) -> Array:
    """[G] |det(cell)|, Å^3 (0 for molecules)."""
    return jnp.abs(jnp.linalg.det(graph.globals.cell))


def with_fidelity(graph: Graph, index: int) -> Graph:
    """``graph`` with every structure at fidelity ``index``."""
    glob = graph.globals
    return graph._replace(globals=glob.replace(fidelity=jnp.full_like(glob.fidelity, index)))


def cast_floats(graph: Graph, dtype=np.float32) -> Graph:
    """Host copy of ``graph`` with float arrays in ``dtype`` (the model's precision); ints and bools
    unchanged."""
    return jax.tree.map(
        lambda x: np.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x), graph
    )
