"""Wiring of each strategy (SPEC §5) on two analytic fidelities with a tiny model.

hf_only sees only HF data; transfer starts from the LF weights with E0 refitted on the HF data and a
fresh optimiser (and a frozen backbone stays frozen); Δ prediction = LF + Δ, in memory and through a
"delta" bundle (load_model, calculator, mfjax evaluate); append keeps old-fidelity predictions (to
1e-6 eV in float64); multi_fidelity trains one model on both fidelities.
"""

from __future__ import annotations

import json
from dataclasses import replace

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.md.verlet import VelocityVerlet
from helpers.synthetic import synthetic_config

import mfjax.training.fit as fit_module
from mfjax.cli import main
from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.graph import edge_vectors, node_graph_index, num_edges, num_graphs, num_nodes
from mfjax.data.statistics import element_counts, fit_e0
from mfjax.md.jaxmd import energy_fn_for
from mfjax.model import Model, load_model
from mfjax.strategies import append, delta, hf_only, multi_fidelity, transfer
from mfjax.strategies.base import Context
from mfjax.strategies.data import prepare_data
from mfjax.strategies.settings import load_ablation_config
from mfjax.training.optim import ScheduleState


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    directory = tmp_path_factory.mktemp("strategies")
    cfg, settings = load_ablation_config(None, data=synthetic_config(directory))
    data = prepare_data(cfg, settings)
    return Context(cfg, settings, data, directory / "out", log=lambda _: None)


@pytest.fixture
def fit_calls(ctx, monkeypatch):
    """Record the arguments of every stage (``Context.fit``; still training for real)."""
    calls = []
    original = ctx.fit

    def spy(model, train, valid, **kwargs):
        calls.append({"model": model, "train": list(train), "valid": list(valid), **kwargs})
        return original(model, train, valid, **kwargs)

    monkeypatch.setattr(ctx, "fit", spy)
    return calls


@pytest.fixture
def initial_states(monkeypatch):
    """Host copies of the training state every fit starts from (before any step)."""
    states = []
    original = fit_module.create_state

    def spy(*args, **kwargs):
        state = original(*args, **kwargs)
        states.append(jax.device_get(state))
        return state

    monkeypatch.setattr(fit_module, "create_state", spy)
    return states


def test_splits_are_shared_and_uncovered_frames_are_test_only(ctx):
    d = ctx.data
    assert d.hf_uncovered and all(s.info["region"] == "uncovered" for s in d.hf_uncovered)
    assert all(s.info["region"] == "covered" for s in d.hf_pool + d.hf_valid + d.hf_test)
    small, large = d.hf_subset(0.5, seed=3), d.hf_subset(1.0, seed=3)
    assert len(large) == len(d.hf_pool) and {id(s) for s in small} <= {id(s) for s in large}
    assert [id(s) for s in small] == [id(s) for s in d.hf_subset(0.5, seed=3)]  # deterministic


def test_hf_only_sees_only_hf_data(ctx, fit_calls):
    hf = ctx.data.hf_subset(0.5, 0)
    outcome = hf_only.run(ctx, hf, 0)
    (call,) = fit_calls
    assert all(s.fidelity == ctx.data.high for s in call["train"] + call["valid"])
    assert len(call["train"]) == len(hf)
    assert outcome.model.fidelities == (ctx.data.high,) and outcome.low is None
    np.testing.assert_allclose(call["model"].variables["constants"]["e0"], ctx.e0(hf, (ctx.data.high,)), rtol=1e-6)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_transfer_refits_e0_and_uses_a_fresh_optimiser(ctx, fit_calls, initial_states):
    hf = ctx.data.hf_subset(1.0, 0)
    lf = ctx.lf_model(0).model
    fit_calls.clear()
    initial_states.clear()
    outcome = transfer.run(ctx, hf, 0)
    (call,) = fit_calls
    start = call["model"]
    assert _leaves_equal(start.variables["params"], lf.variables["params"])  # starts from the LF weights
    e0_hf = fit_e0(hf, ctx.data.species, (ctx.data.high,), alpha=ctx.cfg.train.e0_alpha)
    np.testing.assert_allclose(start.variables["constants"]["e0"], e0_hf, rtol=1e-6)
    assert not np.allclose(e0_hf, lf.variables["constants"]["e0"])
    assert all(s.fidelity == ctx.data.high for s in call["train"])
    (state,) = initial_states  # the state the fine-tuning started from
    adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")][0]
    assert all(not np.any(np.asarray(m)) for m in jax.tree.leaves(adam.mu))
    assert int(adam.count) == 0
    lr = [s for s in state.opt_state if isinstance(s, ScheduleState)][0]
    budget = ctx.settings.budget  # schedule "continued": the fine-tuning continues the pre-training's decay
    assert int(lr.count) == budget.pretrain_steps and float(lr.hyper[3]) == budget.total_steps
    assert not _leaves_equal(outcome.model.variables["params"], lf.variables["params"])


def test_transfer_with_frozen_backbone_trains_only_the_readout(ctx):
    frozen = Context(ctx.cfg, replace(ctx.settings, transfer_freeze="backbone"), ctx.data, ctx.out_dir,
                     log=lambda _: None, cache=ctx.cache)
    frozen._lf = ctx._lf
    frozen.lf_model(0)
    lf = frozen.lf_model(0).model.variables["params"]
    tuned = transfer.run(frozen, frozen.data.hf_subset(1.0, 0), 0).model.variables["params"]
    assert set(tuned) == set(lf)
    for group in lf:
        same = _leaves_equal(tuned[group], lf[group])
        assert same == (group not in transfer.HEAD), group


def test_delta_prediction_is_low_plus_delta(ctx):
    hf = ctx.data.hf_subset(1.0, 0)
    outcome = delta.run(ctx, hf, 0)
    assert outcome.notes["delta_low_labels"] == "paired"
    model = outcome.model
    assert model.kind == "delta" and model.fidelities == (ctx.data.high,)
    base, corr = model.parts()
    assert _leaves_equal(base.variables, ctx.lf_model(0).model.variables)
    test = ctx.data.hf_test
    total = ctx.predict(model, test)  # the compiled sum (what a "delta" bundle runs)
    low = ctx.predict(base, [replace(s, fidelity=ctx.data.low) for s in test])
    dlt = ctx.predict(corr, test)
    for t, b, c in zip(total, low, dlt):
        assert t["energy"] == pytest.approx(b["energy"] + c["energy"], rel=2e-6)  # float32 sums of ~1e3 eV
        np.testing.assert_allclose(t["forces"], b["forces"] + c["forces"], atol=1e-4)
    metrics = ctx.evaluate(model, test)[ctx.data.high]
    host = [t["forces"] - s.forces for t, s in zip(total, test)]
    assert metrics["forces_mae_ev_a"] == pytest.approx(np.mean(np.abs(np.concatenate(host))), rel=1e-4)


def test_delta_labels_paired_and_predicted(ctx):
    hf = ctx.data.hf_subset(1.0, 0)
    lf = ctx.lf_model(0).model
    labels, counts = delta.low_labels(ctx, lf, hf)
    assert counts == {"paired": len(hf), "predicted": 0}
    dstructs = delta.delta_structures(hf, labels, ctx.data.high)
    for h, l, ds in zip(hf, labels, dstructs):
        assert l.structure_id == h.structure_id and l.fidelity == ctx.data.low
        assert ds.energy == pytest.approx(h.energy - l.energy)
        np.testing.assert_allclose(ds.forces, h.forces - l.forces)
    predicted = Context(ctx.cfg, replace(ctx.settings, delta_labels="predicted"), ctx.data, ctx.out_dir,
                        log=lambda _: None, cache=ctx.cache)
    labels, counts = delta.low_labels(predicted, lf, hf)
    assert counts == {"paired": 0, "predicted": len(hf)}
    assert isinstance(labels[0], dict) and labels[0]["forces"].shape == hf[0].forces.shape


def test_delta_bundle_is_one_potential(ctx, tmp_path):
    pair = delta.run(ctx, ctx.data.hf_subset(0.5, 0), 0).model
    path = pair.export(tmp_path / "model", training={"note": "test"})
    model = load_model(path)
    assert model.kind == "delta" and model.fidelities == (ctx.data.high,)
    atoms = ctx.data.hf_test[0].to_atoms()
    expected = ctx.predict(pair, [ctx.data.hf_test[0]])[0]
    got = model.predict(atoms)
    assert got["energy"] == pytest.approx(expected["energy"], rel=2e-6)
    np.testing.assert_allclose(got["forces"], expected["forces"], atol=1e-4)
    atoms.calc = model.calculator()
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], rel=2e-6)
    VelocityVerlet(atoms, timestep=0.5).run(3)  # MD through the calculator
    fresh = ctx.data.hf_test[0].to_atoms()
    pot = energy_fn_for(model, None, fresh.numbers)  # jax-md energy function of the same potential
    positions = jnp.asarray(fresh.positions, jnp.float32)
    assert float(pot.energy_fn(positions, neighbor=pot.neighbor_fn.allocate(positions))) == pytest.approx(
        expected["energy"], rel=2e-6)
    data = tmp_path / "hf.extxyz"
    ase.io.write(data, [s.to_atoms() for s in ctx.data.hf_test])
    assert main(["evaluate", str(path), str(data), "--json", str(tmp_path / "m.json")]) == 0
    metrics = ctx.evaluate(pair, ctx.data.hf_test)[ctx.data.high]
    assert json.loads((tmp_path / "m.json").read_text())[ctx.data.high]["forces_mae_ev_a"] == pytest.approx(
        metrics["forces_mae_ev_a"], rel=1e-3)


def test_append_keeps_old_fidelity_predictions(ctx):
    """float64: the LF energies of the appended model equal the LF model's to 1e-6 eV."""
    lf = ctx.lf_model(0).model
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        lf64 = Model(lf.spec, jax.tree.map(lambda x: np.asarray(x, np.float64), lf.variables))
        appended = append.append_model(ctx, lf64, ctx.data.hf_subset(1.0, 0))
        assert appended.fidelities == (ctx.data.low, ctx.data.high)
        structures = ctx.data.lf_test[:6]

        def energies(model: Model) -> np.ndarray:
            index = {name: k for k, name in enumerate(model.fidelities)}
            graph = structures_to_graph(structures, ctx.cfg.data.cutoff, index)
            graph = jax.tree.map(jnp.asarray, pad_graph(graph, num_nodes(graph) + 1, num_edges(graph), len(structures) + 1))
            atomic = model.apply_fn(model.variables, graph, edge_vectors(graph))
            return np.asarray(jax.ops.segment_sum(atomic, node_graph_index(graph), num_graphs(graph)))[: len(structures)]

        before, after = energies(lf64), energies(appended)
        assert before.dtype == np.float64
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
        e0 = np.asarray(appended.variables["constants"]["e0"])
        lf_e0 = np.asarray(lf64.variables["constants"]["e0"])[0]
        np.testing.assert_allclose(e0[1], ctx.e0(ctx.data.hf_subset(1.0, 0), (ctx.data.high,), prior=lf_e0)[0], rtol=1e-9)
        # one HF frame cannot fix E0 of every element: append and transfer keep the LF E0 plus the
        # least-norm correction (elements the frame lacks keep the LF value), never a zero E0
        one = [min(ctx.data.hf_subset(1.0, 0), key=lambda s: len(set(s.species.tolist())))]
        lacking = [k for k, z in enumerate(ctx.data.species) if z not in set(one[0].species.tolist())]
        for model in (append.append_model(ctx, lf64, one), transfer.initial_model(ctx, lf64, one)):
            row = np.asarray(model.variables["constants"]["e0"])[-1]
            np.testing.assert_allclose(row[lacking], lf_e0[lacking], rtol=1e-12)
            assert float(element_counts(one, ctx.data.species)[0] @ row) == pytest.approx(one[0].energy, abs=1e-3)
        assert lacking  # the check above is not empty
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_append_and_multi_fidelity_train_on_both_fidelities(ctx, fit_calls):
    ctx.lf_model(0)  # the cached LF base of append (trained here if no earlier test did: not recorded)
    fit_calls.clear()
    hf = ctx.data.hf_subset(0.5, 0)
    out_append = append.run(ctx, hf, 0)
    assert abs(out_append.notes["append_lf_shift_ev"]) < 1e-2  # float32 run-time check
    out_mf = multi_fidelity.run(ctx, hf, 0)
    out_heads = multi_fidelity.run_heads(ctx, hf, 0)
    for call, outcome in zip(fit_calls, (out_append, out_mf, out_heads)):
        fids = {s.fidelity for s in call["train"]}
        assert fids == {ctx.data.low, ctx.data.high}
        assert sum(s.fidelity == ctx.data.high for s in call["train"]) == len(hf)
        assert call["fidelity_weights"] == {"high": 3.0}
        assert outcome.model.fidelities == (ctx.data.low, ctx.data.high) and outcome.low == ctx.data.low
    assert fit_calls[2]["model"].spec.config.fidelity_mode == "heads"
