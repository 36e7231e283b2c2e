"""Metrics: accumulation over batches equals one big batch (sums, not means of means); units."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import Structure
from mfjax.training.metrics import METRIC_KEYS, MetricAccumulator, format_table, mean_metric, metric_sums
from mfjax.data.graph import num_graphs

FIDS = ("lo", "hi")
INDEX = {f: i for i, f in enumerate(FIDS)}


def _structures(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(7):
        n = int(rng.integers(1, 6))
        periodic = k % 3 == 0
        out.append(Structure(
            species=np.full(n, 1), positions=rng.uniform(0, 3, (n, 3)), cell=np.eye(3) * 5 if periodic else np.zeros((3, 3)),
            pbc=np.array([periodic] * 3), fidelity=FIDS[k % 2], energy=float(rng.normal()),
            forces=rng.normal(size=(n, 3)) if k != 4 else None, stress=rng.normal(size=(3, 3)) if periodic else None,
        ))
    return out


def _fake_pred(structures, graph, offset):
    """Predictions = labels + known errors: energy error = offset * n_atoms, force error = offset."""
    e = np.zeros(num_graphs(graph))
    e[: len(structures)] = [s.energy + offset * s.num_atoms for s in structures]
    f = np.asarray(graph.nodes.forces) + offset
    st = np.asarray(graph.globals.stress) + offset
    return {"energy": jnp.asarray(e), "forces": jnp.asarray(f), "stress": jnp.asarray(st)}


def test_accumulated_equals_single_batch():
    structures = _structures()
    big = pad_graph(structures_to_graph(structures, 2.0, INDEX), 64, 512, 10)
    rng = np.random.default_rng(3)
    pred_big = {"energy": jnp.asarray(rng.normal(size=10)), "forces": jnp.asarray(rng.normal(size=(64, 3))),
                "stress": jnp.asarray(rng.normal(size=(10, 3, 3)))}
    one = MetricAccumulator(FIDS)
    one.add(metric_sums(pred_big, big, 2))
    # same predictions split into uneven batches
    many = MetricAccumulator(FIDS)
    node0 = 0
    for idx in ([0], [1, 2, 3], [4, 5, 6]):
        part = [structures[i] for i in idx]
        g = pad_graph(structures_to_graph(part, 2.0, INDEX), 32, 256, 5)
        n = sum(s.num_atoms for s in part)
        f = np.zeros((32, 3))
        f[:n] = np.asarray(pred_big["forces"])[node0 : node0 + n]
        node0 += n
        e = np.zeros(5)
        e[: len(idx)] = np.asarray(pred_big["energy"])[idx]
        s = np.zeros((5, 3, 3))
        s[: len(idx)] = np.asarray(pred_big["stress"])[idx]
        many.add(metric_sums({"energy": jnp.asarray(e), "forces": jnp.asarray(f), "stress": jnp.asarray(s)}, g, 2))
    a, b = one.result(), many.result()
    for name in FIDS:
        for key in METRIC_KEYS:
            assert a[name][key] == pytest.approx(b[name][key], rel=1e-5), (name, key)


def test_units_and_absent_labels():
    structures = [s for s in _structures() if s.fidelity == "lo"]  # indices 0, 2, 4, 6
    graph = pad_graph(structures_to_graph(structures, 2.0, INDEX), 64, 512, 10)
    acc = MetricAccumulator(FIDS)
    acc.add(metric_sums(_fake_pred(structures, graph, 0.01), graph, 2))
    r = acc.result()
    assert set(r) == {"lo"}  # no 'hi' structures: no row
    lo = r["lo"]
    assert lo["n_structures"] == 4
    assert lo["energy_mae_mev_atom"] == pytest.approx(10.0, rel=1e-5)  # 0.01 eV/atom
    assert lo["energy_rmse_mev_atom"] == pytest.approx(10.0, rel=1e-5)
    assert lo["forces_mae_ev_a"] == pytest.approx(0.01, rel=1e-5)
    assert lo["stress_mae_gpa"] == pytest.approx(0.01 * 160.21766208, rel=1e-5)
    only_molecules = [s for s in structures if not s.pbc.any()]
    g2 = pad_graph(structures_to_graph(only_molecules, 2.0, INDEX), 64, 512, 10)
    acc2 = MetricAccumulator(FIDS)
    acc2.add(metric_sums(_fake_pred(only_molecules, g2, 0.01), g2, 2))
    assert acc2.result()["lo"]["stress_mae_gpa"] is None
    text = format_table(acc2.result())
    assert "lo" in text and "-" in text
    assert mean_metric(r, "forces_mae_ev_a") == pytest.approx(0.01, rel=1e-5)
    assert mean_metric(acc2.result(), "stress_mae_gpa") == float("inf")
