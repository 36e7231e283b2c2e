"""Budgets, greedy packing and the epoch iterator: fixed shapes, every structure once, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from mfjax.data.batching import BatchBudget, GraphBatcher, budget_for, budget_outliers, pack_greedy, run_budget
from mfjax.data.neighbors import BUILDS
from mfjax.data.structures import Structure
from mfjax.errors import DataError

CUTOFF = 3.0


def _structures(n=23, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = int(rng.integers(1, 9))
        side = 2.0 * max(1, int(np.ceil(atoms ** (1 / 3))))
        grid = np.stack(np.meshgrid(*[np.arange(side / 2)] * 3, indexing="ij"), -1).reshape(-1, 3)[:atoms] * 2.0
        out.append(Structure(
            species=rng.choice([1, 8], atoms), positions=grid + rng.uniform(-0.2, 0.2, (atoms, 3)),
            cell=np.eye(3) * side, pbc=np.ones(3, bool), fidelity=["lo", "hi"][k % 2],
            energy=float(k), source="toy.extxyz", index=k,
        ))
    return out


FID = {"lo": 0, "hi": 1}


def _energies(graph):
    return graph.globals.energy[graph.globals.graph_mask].tolist()


def test_budget_fits_the_largest_structure_and_rounds():
    structures = _structures()
    budget = budget_for(structures, CUTOFF, max_graphs=4)
    assert budget.n_graph == 5 and budget.n_node % 8 == 0 and budget.n_edge % 64 == 0
    batcher = GraphBatcher(structures, CUTOFF, FID, budget)  # would raise if any structure did not fit
    assert budget.n_node - 1 >= batcher.num_atoms.max() and budget.n_edge >= batcher.num_edges.max()
    assert budget.n_node >= 4 * batcher.num_atoms.mean()


def test_padded_shapes_fixed_and_every_structure_once_per_epoch():
    structures = _structures()
    budget = budget_for(structures, CUTOFF, max_graphs=4)
    batcher = GraphBatcher(structures, CUTOFF, FID, budget, seed=1)
    for epoch in range(3):
        seen = []
        for graph in batcher.epoch(epoch):
            assert graph.nodes.positions.shape == (budget.n_node, 3)
            assert graph.senders.shape == (budget.n_edge,) and graph.edges.shifts.shape == (budget.n_edge, 3)
            assert graph.n_node.shape == (budget.n_graph,) and int(graph.n_node.sum()) == budget.n_node
            assert int(graph.n_edge.sum()) == budget.n_edge
            assert not graph.globals.graph_mask[-1]
            mask = graph.globals.graph_mask
            assert graph.globals.fidelity[mask].tolist() == [FID[structures[int(e)].fidelity] for e in _energies(graph)]
            seen += _energies(graph)
        assert sorted(seen) == [float(k) for k in range(len(structures))]
        assert batcher.num_batches(epoch) == len(batcher.plan(epoch))


def test_deterministic_shuffled_and_resumable():
    structures = _structures()
    budget = budget_for(structures, CUTOFF, max_graphs=3)
    a = GraphBatcher(structures, CUTOFF, FID, budget, seed=7)
    b = GraphBatcher(structures, CUTOFF, FID, budget, seed=7)
    order_a = [_energies(g) for g in a.epoch(2)]
    assert order_a == [_energies(g) for g in b.epoch(2)]
    assert order_a != [_energies(g) for g in a.epoch(3)]
    assert order_a != [_energies(g) for g in GraphBatcher(structures, CUTOFF, FID, budget, seed=8).epoch(2)]
    resumed = [_energies(g) for g in b.epoch(2, start=3)]
    assert resumed == order_a[3:]
    unshuffled = GraphBatcher(structures, CUTOFF, FID, budget, shuffle=False)
    assert sum((_energies(g) for g in unshuffled.epoch(0)), []) == [float(k) for k in range(len(structures))]


def test_drop_last_drops_only_a_partial_final_batch():
    structures = _structures(n=10)
    budget = BatchBudget(n_node=10_000, n_edge=100_000, n_graph=4)  # 3 per batch: 3+3+3+1
    batcher = GraphBatcher(structures, CUTOFF, FID, budget, drop_last=True)
    assert [len(b) for b in batcher.plan(0)] == [3, 3, 3]


def test_greedy_packing_respects_budget():
    budget = BatchBudget(n_node=11, n_edge=100, n_graph=4)
    atoms, edges = [4, 4, 3, 6, 1, 9], [10, 10, 10, 10, 10, 95]
    batches = pack_greedy(range(6), atoms, edges, budget)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3, 4], [5]]


def test_oversize_structure_is_an_error_naming_it():
    structures = _structures()
    big = max(structures, key=lambda s: s.num_atoms)
    budget = BatchBudget(n_node=big.num_atoms, n_edge=10_000, n_graph=3)
    with pytest.raises(DataError, match=rf"toy.extxyz, frame {big.index}, field 'batch budget': structure of {big.num_atoms} atoms"):
        GraphBatcher(structures, CUTOFF, FID, budget)


def test_unknown_fidelity_in_batcher():
    with pytest.raises(DataError, match="fidelity 'lo' is not one of"):
        GraphBatcher(_structures(n=2), CUTOFF, {"hi": 0}, BatchBudget(100, 1000, 3))


def test_run_budget_and_outlier_warning():
    """One huge structure among small ones sets the budget: it is named in a warning; explicit
    max_nodes / max_edges override the derived budget; neighbour lists are built once per structure."""
    structures = _structures(12)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * 2.0
    big = Structure(species=np.ones(64, int), positions=grid, cell=np.eye(3) * 8.0, pbc=np.ones(3, bool),
                    fidelity="lo", energy=0.0, source="big.extxyz", index=7)
    before = BUILDS["count"]
    derived = run_budget(structures + [big], CUTOFF, max_graphs=4)
    warnings_ = budget_outliers(structures + [big], CUTOFF)
    assert BUILDS["count"] - before == 13  # cached on the structures: budget and warnings share them
    assert derived.n_node - 1 >= 64
    assert warnings_ and "big.extxyz, frame 7" in warnings_[0] and "x the median" in warnings_[0]
    assert budget_outliers(structures, CUTOFF) == []
    explicit = run_budget(structures, CUTOFF, max_graphs=4, max_nodes=200, max_edges=4096)
    assert (explicit.n_node, explicit.n_edge, explicit.n_graph) == (200, 4096, 5)
