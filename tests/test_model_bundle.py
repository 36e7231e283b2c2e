"""Model bundles and ``load_model``: round trip, Δ bundles, fidelity errors, precision, atomic writes."""

from __future__ import annotations

import json

import ase.build
import jax
import numpy as np
import pytest

import mfjax
from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import structure_from_atoms
from mfjax.errors import ConfigError, FidelityError
from mfjax.data.graph import cast_floats
from mfjax.model import Model, ModelSpec, load_model
from mfjax.model.bundle import read_manifest
from mfjax.nn.config import ModelConfig
from mfjax.physics import predict

CONFIG = ModelConfig(cutoff=3.5, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=(8,))
SPECIES = (1, 6, 8)
FIDS = ("pbe", "r2scan")


def _frames():
    mol = ase.build.molecule("CH3OH")
    bulk = ase.build.bulk("C", "diamond", a=3.6)
    bulk.rattle(0.05, seed=0)
    return [mol, bulk]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    spec = ModelSpec(CONFIG, SPECIES, FIDS, 6.0)
    frames = _frames()
    graph = pad_graph(structures_to_graph([structure_from_atoms(a, "r2scan") for a in frames], 3.5,
                                          spec.fidelity_map), 32, 512, 3)
    graph = cast_floats(graph)
    e0 = np.array([[-1.0, -2.0, -3.0], [-1.5, -2.5, -3.5]])
    variables = spec.init(3, graph, e0=e0, scale=0.7)
    direct = jax.device_get(predict(spec.module.apply, variables, graph))
    path = Model(spec, variables).export(tmp_path_factory.mktemp("m") / "model", training={"epochs": 1})
    return path, frames, direct


def test_bundle_contents(bundle):
    path, _, _ = bundle
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "variables.msgpack"]
    manifest = json.loads((path / "model.json").read_text())
    assert manifest["kind"] == "potential" and manifest["format"] == "mfjax-model"
    assert manifest["species"] == list(SPECIES) and manifest["fidelities"] == list(FIDS)
    assert manifest["mfjax_version"] == mfjax.__version__ and manifest["training"] == {"epochs": 1}
    assert read_manifest(path)["cutoff"] == 3.5
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_round_trip_predictions_equal(bundle):
    path, frames, direct = bundle
    model = mfjax.load_model(path)
    assert model.species == SPECIES and model.fidelities == FIDS and model.cutoff == 3.5
    assert model.config == CONFIG
    out = model.predict(frames, fidelity="r2scan")
    n0 = len(frames[0])
    np.testing.assert_allclose(out[0]["energy"], direct["energy"][0], rtol=1e-5)
    np.testing.assert_allclose(out[1]["energy"], direct["energy"][1], rtol=1e-5)
    np.testing.assert_allclose(out[0]["forces"], direct["forces"][:n0], atol=1e-5)
    np.testing.assert_allclose(out[1]["forces"], direct["forces"][n0 : n0 + len(frames[1])], atol=1e-5)
    assert "stress" not in out[0] and out[1]["stress"].shape == (6,)
    single = model.predict(frames[1], fidelity="r2scan")
    assert single["energy"] == pytest.approx(out[1]["energy"], rel=1e-6)
    # the fidelity matters (E0 rows differ)
    assert model.predict(frames[0], fidelity="pbe")["energy"] != pytest.approx(out[0]["energy"])


def test_fidelity_errors_list_available_names(bundle):
    model = load_model(bundle[0])
    assert model.fidelity_index("pbe") == 0
    with pytest.raises(FidelityError, match=r"unknown fidelity 'ccsd' \(available: pbe, r2scan\)"):
        model.fidelity_index("ccsd")
    with pytest.raises(FidelityError, match=r"'R2SCAN': did you mean 'r2scan'\? Names are matched exactly"):
        model.fidelity_index("R2SCAN")
    with pytest.raises(FidelityError, match="differ only by case"):
        ModelSpec(CONFIG, SPECIES, ("low", "LOW "), 6.0)
    with pytest.raises(FidelityError, match="r2scan"):
        model.predict(bundle[1][0])  # multi-fidelity model: a name is required


def test_float64_needs_x64_enabled(bundle):
    if jax.config.jax_enable_x64:
        pytest.skip("x64 already enabled in this process")
    with pytest.raises(ConfigError, match="jax_enable_x64"):
        load_model(bundle[0], precision="float64")
    with pytest.raises(ConfigError, match="precision"):
        load_model(bundle[0], precision="bfloat16")


def test_float64_load(bundle, x64):
    path, frames, direct = bundle
    model = load_model(path, precision="float64")
    leaves = jax.tree.leaves(model.variables)
    assert all(x.dtype == np.float64 for x in leaves if np.issubdtype(x.dtype, np.floating))
    out = model.predict(frames[0], fidelity="r2scan")
    assert out["forces"].dtype == np.float64
    np.testing.assert_allclose(out["energy"], direct["energy"][0], rtol=1e-4)


def test_unknown_kind_and_missing_manifest(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps({"format": "mfjax-model", "format_version": 1, "kind": "weird"}))
    with pytest.raises(ConfigError, match="unknown model kind 'weird'"):
        load_model(broken)
    with pytest.raises(ConfigError, match="no model.json"):
        load_model(tmp_path)
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable model manifest"):
        load_model(broken)


def test_delta_bundle_is_the_sum_of_its_parts(bundle, tmp_path):
    """A Δ model is a Model: base (at one of its fidelities) + a one-fidelity Δ potential, exported
    as a "delta" bundle that loads back into the same energies, forces and stress."""
    path, frames, _ = bundle
    base = load_model(path)
    dspec = ModelSpec(CONFIG, SPECIES, ("ccsdt",), 6.0)
    graph = cast_floats(pad_graph(structures_to_graph([structure_from_atoms(frames[1], "ccsdt")], 3.5,
                                                      dspec.fidelity_map), 16, 256, 2))
    correction = Model(dspec, dspec.init(5, graph, e0=np.array([[0.1, 0.2, 0.3]]), scale=0.05))
    delta = Model.delta(base, "pbe", correction)
    assert delta.kind == "delta" and delta.fidelities == ("ccsdt",)
    want = [
        {k: b[k] + c[k] for k in b}
        for b, c in zip(base.predict(frames, fidelity="pbe"), correction.predict(frames))
    ]
    got = delta.predict(frames)
    for w, g in zip(want, got):
        assert g.keys() == w.keys()
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-5)
    exported = delta.export(tmp_path / "delta", training={"note": 1})
    assert read_manifest(exported)["kind"] == "delta"
    again = load_model(exported)
    assert again.kind == "delta" and again.base.fidelity == "pbe"
    for w, g in zip(got, again.predict(frames)):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-6, atol=1e-6)
    atoms = frames[1].copy()
    atoms.calc = again.calculator()
    np.testing.assert_allclose(atoms.get_potential_energy(), got[1]["energy"], rtol=1e-5)
