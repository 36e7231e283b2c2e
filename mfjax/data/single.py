"""One structure as a padded graph: the single-structure builder and its one padding policy.

``single_graph`` serves every path that evaluates one structure at a time: ``Model.predict``,
the ASE calculator (host neighbour lists, numpy) and the jax-md energy function (jax-md neighbour
lists, traced inside ``jit``). The padding policy is the same everywhere:

* N + 1 nodes: the structure's N atoms, then one padding node;
* 2 graphs: the structure (graph 0), then one padding graph holding the padding node;
* E edges: the real edges first, then padding edges that are self-loops on the padding node with
  zero shift (and zero vector), so they contribute nothing and need no special case.

``Capacity`` chooses E (and N + 1) on the host so that a sequence of structures (an MD run, a
relaxation) reuses one compiled function: capacities only grow, first with a small margin and then
by a factor, so a slowly changing structure recompiles a bounded number of times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import EdgeFeatures, Graph, GraphFeatures, NodeFeatures

__all__ = ["Capacity", "single_graph", "valid_first"]


@dataclass
class Capacity:
    """Node and edge capacities that only grow.

    margin: spare fraction of the first capacities (padded edges cost as much as real ones, so the
    first structure is padded tightly); factor: growth factor (> 1) once a structure no longer fits.
    ``n_node`` counts the padding node; ``grows`` counts capacity changes (each is a compilation).
    """

    margin: float = 0.05
    factor: float = 1.25
    n_node: int = 0
    n_edge: int = 0
    grows: int = 0

    def __post_init__(self) -> None:
        if self.factor <= 1.0:
            raise ValueError(f"capacity factor must be > 1, got {self.factor}")
        if self.margin < 0.0:
            raise ValueError(f"capacity margin must be >= 0, got {self.margin}")

    def fit(self, n_atoms: int, n_edges: int) -> tuple[int, int]:
        """(node capacity incl. the padding node, edge capacity) for a structure of this size."""
        factor = 1.0 + self.margin if self.n_edge == 0 else self.factor
        n_node, n_edge = self.n_node, self.n_edge
        if n_atoms + 1 > n_node:
            n_node = max(n_atoms + 1, math.ceil((n_atoms + 1) * factor))
        if n_edges > n_edge or n_edge == 0:
            n_edge = max(n_edges, math.ceil(max(n_edges, 1) * factor))
        if (n_node, n_edge) != (self.n_node, self.n_edge):
            self.grows += 1
            self.n_node, self.n_edge = n_node, n_edge
        return n_node, n_edge


def single_graph(
    positions, species, senders, receivers, *, shifts=None, cell=None, pbc=None, fidelity: int = 0,
    n_node: int | None = None, n_edge: int | None = None, valid=None, forces=None,
) -> Graph:
    """One structure as a padded ``Graph`` (see the module docstring).

    positions: [N, 3] Å; species: [N] atomic numbers; senders / receivers: [E] neighbour / centre
    indices; shifts: [E, 3] lattice translations of the sender's image (zeros if None); cell: [3, 3]
    rows = lattice vectors (zeros = molecule); pbc: [3]; fidelity: the model's index.
    Host path (numpy, ``valid`` None): every given edge is real; the graph is padded to ``n_edge``
    edges and ``n_node`` nodes (the real ones + padding; default N + 1).
    Traced path (``valid`` [E] bool, e.g. from a jax-md list, with the valid entries first — see
    ``valid_first``): invalid entries become padding edges, so the edge count stays E.
    forces: optional [N, 3] labels (masked True) for evaluation.
    """
    traced = valid is not None
    xp = jnp if traced else np
    n = positions.shape[0]
    dtype = positions.dtype
    e_in = senders.shape[0]
    shifts = xp.zeros((e_in, 3), dtype) if shifts is None else xp.asarray(shifts, dtype)
    if traced:
        senders = jnp.where(valid, senders, n).astype(jnp.int32)
        receivers = jnp.where(valid, receivers, n).astype(jnp.int32)
        shifts = jnp.where(valid[:, None], shifts, 0.0)
        n_real = jnp.sum(valid).astype(jnp.int32)
        n_edge, n_node = e_in, n + 1
    else:
        n_edge = e_in if n_edge is None else int(n_edge)
        n_node = n + 1 if n_node is None else int(n_node)
        if n_edge < e_in or n_node < n + 1:
            raise ValueError(f"capacity ({n_node} nodes, {n_edge} edges) too small for {n} atoms and {e_in} edges")
        pad = n_edge - e_in
        senders = np.concatenate([np.asarray(senders, np.int32), np.full(pad, n, np.int32)])
        receivers = np.concatenate([np.asarray(receivers, np.int32), np.full(pad, n, np.int32)])
        shifts = np.concatenate([shifts, np.zeros((pad, 3), dtype)])
        n_real = np.int32(e_in)
    extra = n_node - n
    cells = xp.zeros((2, 3, 3), dtype)
    if cell is not None:
        cells = cells.at[0].set(cell) if traced else np.concatenate([np.asarray(cell, dtype)[None], cells[1:]])
    periodic = xp.zeros(3, bool) if pbc is None else xp.asarray(pbc, bool)
    node_forces = xp.zeros((n_node, 3), dtype)
    forces_mask = xp.zeros(n_node, bool)
    if forces is not None:
        node_forces = xp.concatenate([xp.asarray(forces, dtype), xp.zeros((extra, 3), dtype)])
        forces_mask = xp.concatenate([xp.ones(n, bool), xp.zeros(extra, bool)])
    return Graph(
        nodes=NodeFeatures(
            positions=xp.concatenate([positions, xp.zeros((extra, 3), dtype)]),
            species=xp.concatenate([xp.asarray(species, xp.int32), xp.zeros(extra, xp.int32)]),
            forces=node_forces,
            forces_mask=forces_mask,
        ),
        edges=EdgeFeatures(shifts=shifts),
        senders=senders,
        receivers=receivers,
        n_node=xp.asarray([n, extra], xp.int32),
        n_edge=xp.stack([n_real, n_edge - n_real]).astype(xp.int32),
        globals=GraphFeatures(
            cell=cells,
            pbc=xp.stack([periodic, xp.zeros(3, bool)]),
            fidelity=xp.asarray([fidelity, 0], xp.int32),
            energy=xp.zeros(2, dtype),
            energy_mask=xp.zeros(2, bool),
            stress=xp.zeros((2, 3, 3), dtype),
            stress_mask=xp.zeros(2, bool),
            weight=xp.zeros((2, 3), dtype),
            graph_mask=xp.asarray([True, False]),
        ),
    )


def valid_first(valid, *arrays):
    """(valid, *arrays) reordered so that the valid entries come first, in their order (traced)."""
    order = jnp.argsort(~valid, stable=True)
    return (valid[order],) + tuple(a[order] for a in arrays)
