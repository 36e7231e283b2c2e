"""Structures -> graphs, and padding to fixed budgets so jit compiles once.

``structures_to_graph`` concatenates structures into one numpy-backed ``Graph``;
``pad_graph`` appends a padding graph (and empty padding graphs) up to node/edge/graph budgets.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mfjax.data.graph import EdgeFeatures, Graph, GraphFeatures, NodeFeatures
from mfjax.data.neighbors import neighbor_list
from mfjax.data.structures import Structure


def structures_to_graph(
    structures: Sequence[Structure],
    cutoff: float,
    fidelity_index: Mapping[str, int],
    neighbor_lists: Sequence | None = None,
) -> Graph:
    """Concatenate structures into one unpadded graph with numpy arrays.

    fidelity_index: fidelity name -> integer index of the model.
    neighbor_lists: precomputed ``NeighborList`` per structure (computed here if None).
    """
    if neighbor_lists is None:
        neighbor_lists = [neighbor_list(s.positions, s.cell, s.pbc, cutoff) for s in structures]
    senders, receivers, shifts = [], [], []
    offset = 0
    for s, nl in zip(structures, neighbor_lists):
        senders.append(nl.senders + offset)
        receivers.append(nl.receivers + offset)
        shifts.append(nl.shifts)
        offset += s.num_atoms
    n = sum(s.num_atoms for s in structures)
    forces = np.zeros((n, 3))
    forces_mask = np.zeros(n, dtype=bool)
    start = 0
    for s in structures:
        if s.forces is not None:
            forces[start : start + s.num_atoms] = s.forces
            forces_mask[start : start + s.num_atoms] = True
        start += s.num_atoms
    g = len(structures)
    return Graph(
        nodes=NodeFeatures(
            positions=np.concatenate([s.positions for s in structures]).astype(np.float64),
            species=np.concatenate([s.species for s in structures]).astype(np.int32),
            forces=forces,
            forces_mask=forces_mask,
        ),
        edges=EdgeFeatures(shifts=np.concatenate(shifts).astype(np.float64).reshape(-1, 3)),
        senders=np.concatenate(senders).astype(np.int32),
        receivers=np.concatenate(receivers).astype(np.int32),
        n_node=np.array([s.num_atoms for s in structures], dtype=np.int32),
        n_edge=np.array([len(nl.senders) for nl in neighbor_lists], dtype=np.int32),
        globals=GraphFeatures(
            cell=np.stack([np.asarray(s.cell, dtype=np.float64) for s in structures]).reshape(g, 3, 3),
            pbc=np.stack([np.asarray(s.pbc, dtype=bool) for s in structures]).reshape(g, 3),
            fidelity=np.array([fidelity_index[s.fidelity] for s in structures], dtype=np.int32),
            energy=np.array([0.0 if s.energy is None else s.energy for s in structures]),
            energy_mask=np.array([s.energy is not None for s in structures]),
            stress=np.stack(
                [np.zeros((3, 3)) if s.stress is None else np.asarray(s.stress) for s in structures]
            ).reshape(g, 3, 3),
            stress_mask=np.array([s.stress is not None for s in structures]),
            weight=np.array([s.weight for s in structures], dtype=np.float64).reshape(g, 3),
            graph_mask=np.ones(g, dtype=bool),
        ),
    )


def pad_graph(graph: Graph, n_node: int, n_edge: int, n_graph: int) -> Graph:
    """Pad ``graph`` to exactly (n_node, n_edge, n_graph) with padding graphs at the end.

    Needs n_node > graph nodes, n_edge >= graph edges and n_graph > graph graphs (one padding
    graph holds every padding node and edge; the rest are empty). Padding edges are self-loops
    on the first padding node with zero shift, so their vectors are exactly zero.
    """
    nn_, ne, ng = graph.num_nodes, graph.num_edges, graph.num_graphs
    if n_node <= nn_ or n_edge < ne or n_graph <= ng:
        raise ValueError(
            f"padding budget (nodes={n_node}, edges={n_edge}, graphs={n_graph}) too small for "
            f"a batch of {nn_} nodes, {ne} edges, {ng} graphs (needs one spare node and graph)"
        )
    pn, pe, pg = n_node - nn_, n_edge - ne, n_graph - ng

    def cat(a, k, fill=0):
        a = np.asarray(a)
        return np.concatenate([a, np.full((k,) + a.shape[1:], fill, dtype=a.dtype)])

    n_node_pad = np.zeros(pg, dtype=np.int32)
    n_node_pad[0] = pn
    n_edge_pad = np.zeros(pg, dtype=np.int32)
    n_edge_pad[0] = pe
    nodes, glob = graph.nodes, graph.globals
    return Graph(
        nodes=NodeFeatures(
            positions=cat(nodes.positions, pn),
            species=cat(nodes.species, pn),
            forces=cat(nodes.forces, pn),
            forces_mask=cat(nodes.forces_mask, pn, False),
        ),
        edges=EdgeFeatures(shifts=cat(graph.edges.shifts, pe)),
        senders=cat(graph.senders, pe, nn_),
        receivers=cat(graph.receivers, pe, nn_),
        n_node=np.concatenate([np.asarray(graph.n_node), n_node_pad]),
        n_edge=np.concatenate([np.asarray(graph.n_edge), n_edge_pad]),
        globals=GraphFeatures(
            cell=cat(glob.cell, pg),
            pbc=cat(glob.pbc, pg, False),
            fidelity=cat(glob.fidelity, pg),
            energy=cat(glob.energy, pg),
            energy_mask=cat(glob.energy_mask, pg, False),
            stress=cat(glob.stress, pg),
            stress_mask=cat(glob.stress_mask, pg, False),
            weight=cat(glob.weight, pg),
            graph_mask=cat(glob.graph_mask, pg, False),
        ),
    )
