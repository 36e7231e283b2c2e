"""Loss (SPEC §4): hand-computed values, masking, padding, per-structure and per-fidelity weights."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import Structure
from mfjax.errors import ConfigError
from mfjax.training.loss import KBAR_PER_EV_A3, LossSettings, combine, elementwise, fidelity_weight_vector, loss_sums
from mfjax.data.graph import node_mask, num_graphs, num_nodes

FIDS = {"lo": 0, "hi": 1}


def _structure(n, fidelity, seed, energy=True, forces=True, stress=False, weight=(1.0, 1.0, 1.0)):
    rng = np.random.default_rng(seed)
    periodic = stress
    return Structure(
        species=np.full(n, 6), positions=rng.uniform(0, 3, (n, 3)), cell=np.eye(3) * 6 if periodic else np.zeros((3, 3)),
        pbc=np.array([periodic] * 3), fidelity=fidelity, energy=float(rng.normal()) if energy else None,
        forces=rng.normal(size=(n, 3)) if forces else None,
        stress=rng.normal(size=(3, 3)) * 1e-3 if stress else None, weight=weight,
    )


def _pred(graph, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "energy": jnp.asarray(rng.normal(size=num_graphs(graph))),
        "forces": jnp.asarray(rng.normal(size=(num_nodes(graph), 3))),
        "stress": jnp.asarray(rng.normal(size=(num_graphs(graph), 3, 3)) * 1e-3),
    }


def _loss(structures, pred=None, fw=(1.0, 1.0), settings=LossSettings(), pad=(40, 400, 6)):
    graph = pad_graph(structures_to_graph(structures, 2.0, FIDS), *pad)
    pred = _pred(graph) if pred is None else pred
    sums = loss_sums(pred, graph, jnp.asarray(fw), settings)
    total, per_fid = combine(sums, settings)
    return float(total), np.asarray(per_fid), graph, pred


def test_huber_matches_definition():
    x = jnp.array([-0.5, -0.01, 0.0, 0.004, 0.02, 3.0])
    d = 0.01
    expected = np.where(np.abs(x) <= d, 0.5 * x**2, d * (np.abs(x) - 0.5 * d))
    np.testing.assert_allclose(elementwise(x, "huber", d), expected, rtol=1e-6)
    np.testing.assert_allclose(elementwise(x, "mse", d), np.asarray(x) ** 2)


def test_hand_computed_value_with_weights_and_masks():
    s = [
        _structure(3, "lo", 0, stress=True, weight=(2.0, 1.0, 1.0)),
        _structure(2, "hi", 1, energy=False),
        _structure(4, "hi", 2, forces=False, stress=True),
    ]
    settings = LossSettings(kind="mse", energy_weight=1.0, forces_weight=0.5, stress_weight=0.01)
    total, per_fid, graph, pred = _loss(s, fw=(1.0, 7.0), settings=settings)
    e = np.asarray(pred["energy"])
    f = np.asarray(pred["forces"])
    st = np.asarray(pred["stress"])
    # energy: structures 0 (w 2*1) and 2 (w 1*7); per atom
    e_terms = [2.0 * ((e[0] - s[0].energy) / 3) ** 2, 7.0 * ((e[2] - s[2].energy) / 4) ** 2]
    # forces: structures 0 (w 1) and 1 (w 7), 3 components each atom
    f_terms = [((f[0:3] - s[0].forces) ** 2).sum(), 7.0 * ((f[3:5] - s[1].forces) ** 2).sum()]
    voigt = lambda t: t[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # noqa: E731
    s_terms = [(((voigt(st[0] - s[0].stress)) * KBAR_PER_EV_A3) ** 2).sum(),
               7.0 * (((voigt(st[2] - s[2].stress)) * KBAR_PER_EV_A3) ** 2).sum()]
    expected = sum(e_terms) / 2 + 0.5 * sum(f_terms) / (3 * 5) + 0.01 * sum(s_terms) / 12
    assert total == pytest.approx(expected, rel=1e-5)
    # per-fidelity: lo has one structure of each kind
    lo = e_terms[0] / 1 + 0.5 * f_terms[0] / 9 + 0.01 * s_terms[0] / 6
    assert per_fid[0] == pytest.approx(lo, rel=1e-5)


def test_masked_labels_and_padding_do_not_matter():
    s = [_structure(3, "lo", 0, energy=False), _structure(2, "hi", 1, forces=False)]
    total, _, graph, pred = _loss(s)
    # change the placeholder values behind the masks and every prediction on padding
    glob = graph.globals
    tampered = graph._replace(
        nodes=graph.nodes.replace(forces=np.where(graph.nodes.forces_mask[:, None], graph.nodes.forces, 99.0)),
        globals=glob.replace(energy=np.where(glob.energy_mask, glob.energy, 1e3)),
    )
    pad_nodes = ~np.asarray(node_mask(tampered))
    pred2 = dict(pred)
    pred2["forces"] = jnp.where(pad_nodes[:, None], 1e6, pred["forces"])
    pred2["energy"] = jnp.where(np.asarray(glob.graph_mask), pred["energy"], -1e6)
    sums = loss_sums(pred2, tampered, jnp.ones(2), LossSettings())
    assert float(combine(sums, LossSettings())[0]) == pytest.approx(total, rel=1e-6)
    # more padding (extra padding nodes/graphs with garbage predictions): same loss
    big = {
        "energy": jnp.concatenate([pred["energy"], jnp.full(4, 5.0)]),
        "forces": jnp.concatenate([pred["forces"], jnp.full((20, 3), 5.0)]),
        "stress": jnp.concatenate([pred["stress"], jnp.ones((4, 3, 3))]),
    }
    bigger, _, _, _ = _loss(s, pred=big, pad=(60, 500, 10))
    assert bigger == pytest.approx(total, rel=1e-6)


def test_fidelity_weight_changes_only_weighted_fidelity():
    s = [_structure(3, "lo", 0), _structure(2, "hi", 1)]
    base, per_base, _, _ = _loss(s, fw=(1.0, 1.0))
    up, per_up, _, _ = _loss(s, fw=(1.0, 7.0))
    assert per_up[0] == pytest.approx(per_base[0])
    assert per_up[1] == pytest.approx(7.0 * per_base[1], rel=1e-5)
    assert up > base


def test_no_labels_gives_zero_not_nan():
    s = [_structure(3, "lo", 0, energy=False, forces=False, stress=False)]
    total, per_fid, _, _ = _loss(s)
    assert total == 0.0 and np.all(per_fid == 0.0)


def test_fidelity_weight_vector_rejects_unknown_names():
    np.testing.assert_array_equal(fidelity_weight_vector(("pbe", "r2scan"), {"r2scan": 7}), [1.0, 7.0])
    with pytest.raises(ConfigError, match="r2scn"):
        fidelity_weight_vector(("pbe", "r2scan"), {"r2scn": 7})


