"""Structures -> graphs, and padding to fixed budgets so jit compiles once.

``structures_to_graph`` concatenates structures into one numpy-backed ``Graph``;
``pad_graph`` appends a padding graph (and empty padding graphs) up to node/edge/graph budgets.
``BatchBudget``/``budget_for`` choose those budgets from the data, ``pack_greedy`` splits an order of
structures into batches that fit, and ``GraphBatcher`` yields padded batches epoch by epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

from mfjax.data.graph import EdgeFeatures, Graph, GraphFeatures, NodeFeatures, num_edges, num_graphs, num_nodes
from mfjax.data.neighbors import structure_neighbors
from mfjax.data.structures import Structure
from mfjax.errors import DataError


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
        neighbor_lists = [structure_neighbors(s, cutoff) for s in structures]
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


def power_of_two(n: int, minimum: int) -> int:
    """Next power of two >= n (>= minimum): the one bucket rule (``bucket_shape`` and the calculator
    pool of ``mfjax.materials.relax``)."""
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


def bucket_shape(graph: Graph) -> tuple[int, int, int]:
    """(nodes, edges, graphs) of the power-of-two bucket ``graph`` is padded to by
    :func:`pad_to_bucket` (one spare node and graph; at least 8 nodes, 64 edges, 2 graphs): few
    distinct padded shapes, so few compilations for batches of varying size."""
    return (power_of_two(num_nodes(graph) + 1, 8), power_of_two(num_edges(graph), 64),
            power_of_two(num_graphs(graph) + 1, 2))


def pad_to_bucket(graph: Graph) -> Graph:
    """``graph`` padded to its :func:`bucket_shape` (inference on ad-hoc batches of structures)."""
    return pad_graph(graph, *bucket_shape(graph))


def pad_graph(graph: Graph, n_node: int, n_edge: int, n_graph: int) -> Graph:
    """Pad ``graph`` to exactly (n_node, n_edge, n_graph) with padding graphs at the end.

    Needs n_node > graph nodes, n_edge >= graph edges and n_graph > graph graphs (one padding
    graph holds every padding node and edge; the rest are empty). Padding edges are self-loops
    on the first padding node with zero shift, so their vectors are exactly zero.
    """
    nn_, ne, ng = num_nodes(graph), num_edges(graph), num_graphs(graph)
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


# ---- budgets, packing and the epoch iterator -----------------------------------------------------
@dataclass(frozen=True)
class BatchBudget:
    """Fixed padded batch shapes: n_node atoms, n_edge edges, n_graph graphs (padding included).

    A batch holds at most n_graph - 1 real structures and n_node - 1 real atoms (one graph and one
    node are always left for padding, as ``pad_graph`` needs).
    """

    n_node: int
    n_edge: int
    n_graph: int

    def fits(self, num_atoms: int, num_edges: int) -> bool:
        return num_atoms <= self.n_node - 1 and num_edges <= self.n_edge


def _round_up(x: float, multiple: int) -> int:
    return int(-(-int(np.ceil(x)) // multiple) * multiple)


def budget_for(
    structures: Sequence[Structure],
    cutoff: float,
    max_graphs: int,
    neighbor_counts: Sequence[int] | None = None,
    num_std: float = 3.0,
) -> BatchBudget:
    """A budget derived from the data so that a batch of ``max_graphs`` random structures fits.

    Atoms (edges) of ``max_graphs`` random structures sum to about m*mean +- sqrt(m)*std; the budget
    is m*mean + num_std*sqrt(m)*std, never below the largest single structure, plus one padding
    node; nodes round up to a multiple of 8 and edges to 64. ``neighbor_counts`` reuses edge counts.
    """
    if not structures:
        raise DataError("cannot derive a batch budget from an empty dataset")
    if max_graphs < 1:
        raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
    if neighbor_counts is None:
        neighbor_counts = [len(structure_neighbors(s, cutoff).senders) for s in structures]
    atoms = np.array([s.num_atoms for s in structures], dtype=np.float64)
    edges = np.asarray(neighbor_counts, dtype=np.float64)

    def size(x: np.ndarray) -> float:
        return max(max_graphs * x.mean() + num_std * np.sqrt(max_graphs) * x.std(), x.max())

    return BatchBudget(
        n_node=_round_up(size(atoms) + 1, 8),
        n_edge=max(_round_up(size(edges), 64), 64),
        n_graph=max_graphs + 1,
    )


def run_budget(
    structures: Sequence[Structure], cutoff: float, max_graphs: int, max_nodes: int | None = None,
    max_edges: int | None = None,
) -> BatchBudget:
    """The batch budget of a run: ``train.batch`` (max_graphs, and max_nodes / max_edges when given)
    over every structure the run batches (train, valid and test). ``mfjax train``, ``mfjax ablate``
    and ``mfjax check-data`` all call this, so they report the same budget."""
    derived = budget_for(structures, cutoff, max_graphs)
    return BatchBudget(n_node=max_nodes or derived.n_node, n_edge=max_edges or derived.n_edge, n_graph=max_graphs + 1)


def budget_outliers(structures: Sequence[Structure], cutoff: float, factor: float = 4.0) -> list[str]:
    """Warnings for structures whose edge (or atom) count is more than ``factor`` x the median: one
    such structure sets the budget, and every batch pays its size in padding."""
    if not structures:
        return []
    edges = np.array([len(structure_neighbors(s, cutoff).senders) for s in structures], dtype=np.float64)
    atoms = np.array([s.num_atoms for s in structures], dtype=np.float64)
    out = []
    for name, sizes in (("edges", edges), ("atoms", atoms)):
        median = float(np.median(sizes))
        k = int(np.argmax(sizes))
        if median > 0 and sizes[k] > factor * median:
            s = structures[k]
            out.append(
                f"{s.where}: {int(sizes[k])} {name}, {sizes[k] / median:.1f}x the median structure ({median:g}); "
                f"it sets the batch budget, so every batch is padded to hold it. Move such structures to their "
                f"own run or set train.batch.max_nodes / max_edges (structures that do not fit are an error)"
            )
    return out


def pack_greedy(order: Sequence[int], atoms: Sequence[int], edges: Sequence[int], budget: BatchBudget) -> list[np.ndarray]:
    """Split ``order`` (structure indices) into consecutive batches that fit ``budget``.

    Sequential greedy: a batch is closed when the next structure would exceed any budget, so the
    packing is a deterministic function of the order. Every structure must fit on its own.
    """
    batches: list[np.ndarray] = []
    current: list[int] = []
    n_at = n_ed = 0
    for k in order:
        a, e = int(atoms[k]), int(edges[k])
        if current and (n_at + a > budget.n_node - 1 or n_ed + e > budget.n_edge or len(current) >= budget.n_graph - 1):
            batches.append(np.asarray(current, dtype=np.int64))
            current, n_at, n_ed = [], 0, 0
        current.append(int(k))
        n_at += a
        n_ed += e
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


class GraphBatcher:
    """Padded ``Graph`` batches of fixed budget shapes over a list of structures.

    Neighbour lists are computed once (host side) and cached. ``epoch(e)`` is a deterministic
    function of (seed, e): a seeded permutation (if ``shuffle``) packed greedily; ``epoch(e, start)``
    resumes at batch ``start``. Every structure appears exactly once per epoch, unless ``drop_last``
    drops a final batch that has fewer than ``budget.n_graph - 1`` structures.
    """

    def __init__(
        self,
        structures: Sequence[Structure],
        cutoff: float,
        fidelity_index: Mapping[str, int],
        budget: BatchBudget,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.structures = list(structures)
        self.cutoff = float(cutoff)
        self.fidelity_index = dict(fidelity_index)
        self.budget = budget
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.neighbor_lists = [structure_neighbors(s, cutoff) for s in self.structures]
        self.num_atoms = np.array([s.num_atoms for s in self.structures], dtype=np.int64)
        self.num_edges = np.array([len(nl.senders) for nl in self.neighbor_lists], dtype=np.int64)
        for s, e in zip(self.structures, self.num_edges):
            if s.fidelity not in self.fidelity_index:
                raise DataError(f"fidelity {s.fidelity!r} is not one of {list(self.fidelity_index)}", source=s.source, frame=s.index, field="fidelity")
            if not budget.fits(s.num_atoms, int(e)):
                raise DataError(
                    f"structure of {s.num_atoms} atoms and {int(e)} edges exceeds the batch budget "
                    f"({budget.n_node - 1} real atoms, {budget.n_edge} edges): raise train.batch.max_nodes/max_edges",
                    source=s.source, frame=s.index, field="batch budget",
                )
        self._plans: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.structures)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Structure indices of every batch of ``epoch`` (cached for the last few epochs)."""
        if epoch not in self._plans:
            n = len(self.structures)
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n) if self.shuffle else np.arange(n)
            batches = pack_greedy(order, self.num_atoms, self.num_edges, self.budget)
            if self.drop_last and batches and len(batches[-1]) < self.budget.n_graph - 1:
                batches = batches[:-1]
            if len(self._plans) > 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[epoch] = batches
        return self._plans[epoch]

    def num_batches(self, epoch: int = 0) -> int:
        return len(self.plan(epoch))

    def batch(self, indices: Sequence[int]) -> Graph:
        """The padded graph of the structures with these indices."""
        graph = structures_to_graph(
            [self.structures[k] for k in indices], self.cutoff, self.fidelity_index,
            neighbor_lists=[self.neighbor_lists[k] for k in indices],
        )
        b = self.budget
        return pad_graph(graph, b.n_node, b.n_edge, b.n_graph)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Graph]:
        """Yield the padded batches of ``epoch`` from batch number ``start`` on."""
        for indices in self.plan(epoch)[start:]:
            yield self.batch(indices)
