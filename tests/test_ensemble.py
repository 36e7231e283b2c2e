"""Ensembles (issue 15): one Model with a member axis, trained in one vectorised run through ``fit``.

Identical members have zero spread; different seeds do not; the spread is the members' std (checked
against the members one by one); the ASE calculator returns the same numbers; the bundle round trip
keeps the ensemble; after a short training the spread on the training structures is far smaller
than on rattled / compressed ones; K members train with one compiled step."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import yaml
from helpers.models import random_potential_model
from helpers.synthetic import synthetic_atoms, to_structures, write_synthetic_dataset

from mfjax.cli import main
from mfjax.config import TrainConfig
from mfjax.data import statistics
from mfjax.data.batching import run_budget
from mfjax.errors import ConfigError
from mfjax.model import Model, ModelSpec, load_model
from mfjax.nn.presets import load_preset
from mfjax.training.ensemble import (
    EnsembleStepCache,
    ensemble_from_pretrained,
    fit_ensemble,
    init_ensemble,
)
from mfjax.training.setup import example_graph

FAST = {"num_layers": 1, "hidden_irreps": "8x0e+4x1e", "lmax": 1, "radial_hidden": [8]}


@pytest.mark.slow
def test_identical_members_have_zero_spread(make_atoms):
    one = random_potential_model(**FAST)
    ens = Model.ensemble([one, one, one])
    assert ens.ensemble_size == 3 and ens.key != one.key
    frames = [make_atoms("CH4", periodic=False, seed=1), make_atoms("CHO", periodic=False, seed=2)]
    for single, mean in zip(one.predict(frames, "r2scan"), ens.predict(frames, "r2scan")):
        assert mean["energy_std"] == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(mean["forces_std"], 0.0, atol=1e-5)
        assert mean["energy"] == pytest.approx(single["energy"], abs=1e-4)
        np.testing.assert_allclose(mean["forces"], single["forces"], atol=1e-4)


@pytest.mark.slow
def test_spread_is_the_members_std_and_the_calculator_agrees(make_atoms):
    members = [random_potential_model(seed=s, **FAST) for s in (0, 1, 2)]
    ens = Model.ensemble(members)
    atoms = make_atoms("CH4", periodic=False, seed=3)
    got = ens.predict(atoms, "pbe")
    each = [m.predict(atoms, "pbe") for m in members]
    energies = np.array([p["energy"] for p in each])
    forces = np.stack([p["forces"] for p in each])  # [K, n, 3]
    assert got["energy_std"] > 1e-3
    assert got["energy"] == pytest.approx(energies.mean(), rel=1e-5)
    assert got["energy_std"] == pytest.approx(energies.std(), rel=1e-3)
    np.testing.assert_allclose(got["forces_std"], np.sqrt(forces.var(axis=0).sum(-1)), rtol=1e-3, atol=1e-6)
    atoms.calc = ens.calculator("pbe")
    np.testing.assert_allclose(atoms.get_forces(), got["forces"], atol=1e-5)
    assert atoms.calc.results["energy_std"] == pytest.approx(got["energy_std"], rel=1e-5)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], got["forces_std"], rtol=1e-5, atol=1e-7)
    assert "energy_std" not in members[0].predict(atoms, "pbe")  # a single model has no spread


def test_bundle_round_trip(tmp_path, make_atoms):
    ens = Model.ensemble([random_potential_model(seed=s, **FAST) for s in (0, 1)])
    loaded = load_model(ens.export(tmp_path / "ens"))
    assert loaded.ensemble_size == 2 and loaded.metadata["ensemble_size"] == 2
    atoms = make_atoms("CH4", periodic=False, seed=4)
    a, b = ens.predict(atoms, "r2scan"), loaded.predict(atoms, "r2scan")
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-6)
    np.testing.assert_allclose(a["forces_std"], b["forces_std"], atol=1e-7)


def test_bad_ensembles_are_rejected():
    one = random_potential_model(**FAST)
    with pytest.raises(ConfigError, match="leading member axis"):
        Model(one.spec, one.variables, ensemble_size=2)
    with pytest.raises(ConfigError, match="share one spec"):
        Model.ensemble([one, random_potential_model(fidelities=("a", "b", "c"), **FAST)])


@pytest.fixture(scope="module")
def trained():
    frames = synthetic_atoms(16, "lo", seed=0, periodic_every=0)
    structures = to_structures(frames)
    config = load_preset("small", cutoff=4.0, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=[8])
    spec = ModelSpec(config, (18, 29), ("lo",), 3.0)
    e0 = statistics.fit_e0(structures, spec.species, spec.fidelities, alpha=1e-6)
    ens = init_ensemble(spec, 3, 0, example_graph(structures[0], spec), e0=e0, scale=statistics.force_rms(structures))
    cache = EnsembleStepCache()
    result = fit_ensemble(ens, structures, [], TrainConfig(lr=0.02, lr_final=0.002), cache=cache,
                          budget=run_budget(structures, 4.0, 8, None, None), steps=80, log=lambda _: None)
    return frames, ens, result, cache


def _spread(model, frames) -> float:
    return float(np.mean([p["forces_std"].mean() for p in model.predict(frames)]))


@pytest.mark.slow
def test_training_shrinks_the_spread_on_the_data_not_off_it(trained):
    frames, before, result, _ = trained
    rng = np.random.default_rng(5)
    rattled, compressed = [], []
    for atoms in frames[:8]:
        r = atoms.copy()
        r.positions += rng.normal(0.0, 0.5, r.positions.shape)
        c = atoms.copy()
        c.positions *= 0.8
        rattled.append(r)
        compressed.append(c)
    model = result.model
    assert model.ensemble_size == 3
    on_data = _spread(model, frames[:8])
    assert on_data < 0.7 * _spread(before, frames[:8])  # training pulls the members together...
    assert _spread(model, rattled) > 3 * on_data  # ...where there is data only
    assert _spread(model, compressed) > 3 * on_data


@pytest.mark.slow
def test_one_compilation_for_k_members(trained):
    _, _, result, cache = trained
    assert result.steps == 80
    sizes = {key[0]: fn.jitted._cache_size() for key, fn in cache._steps.items()}
    assert sizes["ensemble-train"] == 1  # one compiled step trained all K members for every batch
    assert sizes["train"] == 0  # the single-member step is only traced inside it, never compiled alone


def test_ensemble_from_pretrained(make_atoms):
    base = random_potential_model(**FAST)
    molecule = make_atoms("CH4", periodic=False, seed=0)
    molecule.info["fidelity"] = "pbe"
    example = example_graph(to_structures([molecule])[0], base.spec)
    atoms = make_atoms("CH4", periodic=False, seed=6)
    same = ensemble_from_pretrained(base, 3, seed=1, example=example, reinit=())
    assert same.predict(atoms, "r2scan")["energy_std"] == pytest.approx(0.0, abs=1e-6)
    heads = ensemble_from_pretrained(base, 3, seed=1, example=example)
    assert heads.predict(atoms, "r2scan")["energy_std"] > 1e-3
    kept = [k for k in base.variables["params"] if k != "readout"]
    for name in kept:  # everything but the readout heads is the pretrained model's, in every member
        for member in heads.members():
            for a, b in zip(jax.tree.leaves(member.variables["params"][name]),
                            jax.tree.leaves(base.variables["params"][name])):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="no param group"):
        ensemble_from_pretrained(base, 2, seed=0, example=example, reinit=("nope",))


@pytest.mark.slow
def test_mfjax_train_ensemble(tmp_path, capsys):
    raw = write_synthetic_dataset(tmp_path / "data", n_low=16, n_high=8)
    raw["train"].update(ensemble=2, epochs=2)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    model = load_model(tmp_path / "data" / "run" / "model")
    assert model.ensemble_size == 2
    frame = synthetic_atoms(1, "hi", seed=9, periodic_every=0)[0]
    assert model.predict(frame, "hi")["energy_std"] > 0
    raw["train"]["ensemble"] = 0
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--overwrite"]) == 2
    assert "train.ensemble must be >= 1" in capsys.readouterr().err
