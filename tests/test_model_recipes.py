"""Multi-fidelity recipe options (issue 17): ``model.fidelity_embedding``, ``model.fidelity_scale``,
``train.loss.fidelity_l2`` and the ``medium`` preset.

Off by default: the shipped bundle predicts exactly what it predicted before the options existed.
On: the fidelity enters only where documented (embedding one-hot rows, scale rows, E0), the scale
starts at 1 (model equal to the plain one), ``append_fidelity`` keeps old predictions, the model
stays invariant/equivariant with forces = -dE/dx and inert padding (float64), specs and bundles
round-trip, the L2 penalty's gradient touches only the fidelity-specific weights, and a training
step with everything on compiles once.
"""

from __future__ import annotations

import dataclasses

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.synthetic import write_synthetic_dataset

from mfjax.config import load_config
from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.dataset import load_data
from mfjax.data.graph import edge_vectors, node_graph_index, num_graphs
from mfjax.datasets import dataset_path, pretrained_model_path
from mfjax.errors import ConfigError
from mfjax.model import Model, ModelSpec, load_model
from mfjax.nn.model import Potential, append_fidelity, count_parameters, fidelity_weight_mask, init_variables
from mfjax.nn.presets import load_preset
from mfjax.physics import predict
from mfjax.training.compiled import StepCache
from mfjax.training.fit import fit
from mfjax.training.loss import LossSettings
from mfjax.training.setup import batch_budget, initial_model
from mfjax.training.step import fidelity_l2_penalty, make_loss_fn, make_predict_fn
from test_physics_model import CUTOFF, REFLECTION, ROTATION, SPECIES, displaced, molecule, tiny_config, transformed, triclinic

FIDS = ("f0", "f1", "f2")
E0 = np.array([[-1.0, -2.0, -3.0, -4.0], [-1.5, -2.5, -3.5, -4.5], [0.3, 0.2, 0.1, 0.0]])
ALL_ON = dict(fidelity_embedding=True, fidelity_scale=True, fidelity_scale_per_species=True)
H = 1e-5


def config(mode: str = "conditioning", **options):
    """2 layers, l_max 1 (quick to compile), with the given recipe options."""
    return tiny_config(fidelity_mode=mode, hidden_irreps="4x0e+2x1o", lmax=1, **options)


def graph_of(structures, n_fid: int, budget=(40, 400, 7)):
    graph = structures_to_graph(structures, CUTOFF, {name: k for k, name in enumerate(FIDS[:n_fid])})
    return jax.tree.map(jnp.asarray, pad_graph(graph, *budget))


def every_fidelity(n_fid: int):
    """Molecule and triclinic cell, each at every fidelity (one padded batch)."""
    return graph_of([dataclasses.replace(make(), fidelity=f) for make in (molecule, triclinic) for f in FIDS[:n_fid]],
                    n_fid)


def build(n_fid: int, cfg, seed: int = 0):
    module = Potential(cfg, SPECIES, FIDS[:n_fid], 4.0)
    return module, init_variables(module, jax.random.PRNGKey(seed), every_fidelity(n_fid), e0=E0[:n_fid])


_JITTED: dict = {}


def energies(module, variables, n_fid: int) -> np.ndarray:
    """[2, n_fid] total energies of (molecule, cell) x fidelity."""
    graph = every_fidelity(n_fid)
    apply = _JITTED.setdefault((module.config, module.fidelities), jax.jit(module.apply))
    per_graph = jax.ops.segment_sum(apply(variables, graph, edge_vectors(graph)), node_graph_index(graph),
                                    num_graphs(graph))
    return np.asarray(per_graph[: 2 * n_fid]).reshape(2, n_fid)


def e0_sum(e0: np.ndarray) -> np.ndarray:
    """[2, F] sum_i E0[f, species_i] for (molecule, cell)."""
    index = {z: i for i, z in enumerate(SPECIES)}
    counts = [np.bincount([index[z] for z in make().species], minlength=len(SPECIES)) for make in (molecule, triclinic)]
    return np.stack([e0 @ c for c in counts])


def n_params(n_fid: int, cfg) -> int:
    module = Potential(cfg, SPECIES, FIDS[:n_fid], 4.0)
    g = every_fidelity(n_fid)
    return count_parameters(jax.eval_shape(module.init, jax.random.PRNGKey(0), g, edge_vectors(g))["params"])


# ---- off by default ----------------------------------------------------------------------------
# Predictions of the shipped bundle on the first organics_r2scan frame (methanol), recorded with the
# code before the recipe options were added (float32, CPU).
SHIPPED = {
    "pbe": (-3141.56005859375, [[4.095280647277832, -3.2337164878845215, -0.5088286399841309],
                                [-1.1408250331878662, 3.945918083190918, -2.9037272930145264]]),
    "r2scan": (-3143.654052734375, [[4.054759979248047, -3.365980386734009, -0.5413293838500977],
                                    [-1.0019266605377197, 3.592658758163452, -2.6629819869995117]]),
}


def test_shipped_bundle_loads_and_predicts_as_before():
    model = load_model(pretrained_model_path())
    assert not (model.config.fidelity_embedding or model.config.fidelity_scale)
    assert "fidelity_scale" not in model.variables["params"]
    atoms = ase.io.read(dataset_path("organics_r2scan"), index=0)
    for fidelity, (energy, forces) in SHIPPED.items():
        out = model.predict(atoms, fidelity=fidelity)
        assert float(out["energy"]) == energy
        np.testing.assert_array_equal(np.asarray(out["forces"], np.float32)[:2], np.float32(forces))


def test_options_off_build_the_plain_parameters():
    plain = config()
    assert plain == config(fidelity_embedding=False, fidelity_scale=False, fidelity_scale_per_species=False)
    _, variables = build(2, plain)
    assert set(variables["params"]) == {"edge_embedding", "species_embedding", "block_0", "block_1", "readout"}
    assert list(variables["params"]["species_embedding"]["linear"]) == ["w[0,0] 4x0e,4x0e"]  # species only


# ---- fidelity scale ------------------------------------------------------------------------------
@pytest.mark.parametrize("per_species", [False, True])
def test_fidelity_scale_starts_as_the_plain_model_and_scales_e_minus_e0(x64, per_species):
    plain_module, plain_vars = build(2, config(), seed=1)
    module, variables = build(2, config(fidelity_scale=True, fidelity_scale_per_species=per_species), seed=1)
    scale = variables["params"].pop("fidelity_scale")
    assert scale.shape == (2, len(SPECIES) if per_species else 1) and np.all(np.asarray(scale) == 1.0)
    assert jax.tree.all(jax.tree.map(np.array_equal, variables["params"], plain_vars["params"]))
    variables["params"]["fidelity_scale"] = scale
    e_plain, e = energies(plain_module, plain_vars, 2), energies(module, variables, 2)
    np.testing.assert_array_equal(e, e_plain)
    doubled = np.asarray(scale).copy()
    doubled[1] = 2.0
    e2 = energies(module, {**variables, "params": {**variables["params"], "fidelity_scale": doubled}}, 2)
    base = e0_sum(E0[:2])
    np.testing.assert_allclose(e2[:, 0], e[:, 0], rtol=1e-12)
    np.testing.assert_allclose(e2[:, 1] - base[:, 1], 2 * (e[:, 1] - base[:, 1]), rtol=1e-10)
    assert n_params(2, module.config) == n_params(2, config()) + scale.size


def test_fidelity_scale_per_species_needs_fidelity_scale():
    with pytest.raises(ConfigError, match="fidelity_scale_per_species needs .*fidelity_scale: true"):
        config(fidelity_scale_per_species=True)


# ---- fidelity embedding --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["conditioning", "heads"])
def test_fidelity_embedding_adds_one_hot_rows_to_the_embedding(x64, mode):
    # the embedding linear (S species -> C = 4 scalars) gains F x C one-hot weights; one fidelity: none
    assert n_params(1, config(mode, fidelity_embedding=True)) == n_params(1, config(mode))
    assert n_params(3, config(mode, fidelity_embedding=True)) == n_params(3, config(mode)) + 3 * 4
    module, variables = build(2, config(mode, fidelity_embedding=True))
    params = variables["params"]
    assert list(params["species_embedding"]["linear"]) == ["w[0,0] 6x0e,4x0e"]  # 2 fidelities + 4 species
    mask = fidelity_weight_mask(params, module.config, 2)
    emb = mask["species_embedding"]["linear"]["w[0,0] 6x0e,4x0e"]
    np.testing.assert_array_equal(emb, np.concatenate([np.ones((2, 4)), np.zeros((4, 4))]))
    plain_mask = fidelity_weight_mask(build(2, config(mode))[1]["params"], config(mode), 2)
    assert sum(m.sum() for m in jax.tree.leaves(mask)) == sum(m.sum() for m in jax.tree.leaves(plain_mask)) + 2 * 4
    e = energies(module, variables, 2)
    assert np.all(np.abs(np.diff(e, axis=1) - np.diff(e0_sum(E0[:2]), axis=1)) > 1e-4)
    if mode == "heads":  # with equal heads the embedding rows alone still separate the fidelities
        params = {**params, "readout": jax.tree.map(lambda w: np.stack([w[0], w[0]]), params["readout"])}
        assert np.all(np.abs(np.diff(energies(module, {**variables, "params": params}, 2), axis=1)
                             - np.diff(e0_sum(E0[:2]), axis=1)) > 1e-6)
    zeroed = jax.tree.map(lambda p, m: np.asarray(p) * (1 - m), params, mask)
    if mode == "heads":  # zeroed heads: the fidelities differ by E0 only
        zeroed["readout"] = params["readout"]
    e = energies(module, {**variables, "params": zeroed}, 2)
    np.testing.assert_allclose(np.diff(e, axis=1), np.diff(e0_sum(E0[:2]), axis=1), atol=1e-10)


@pytest.mark.parametrize("n_old,mode", [(1, "conditioning"), (2, "conditioning"), (1, "heads")])
def test_append_fidelity_keeps_old_predictions_with_the_options(x64, n_old, mode):
    cfg = config(mode, **ALL_ON)
    module, variables = build(n_old, cfg, seed=3)
    scale = np.asarray(variables["params"]["fidelity_scale"]) + np.arange(n_old)[:, None] * 0.25
    variables["params"]["fidelity_scale"] = scale  # trained-looking scales: rows differ
    before = energies(module, variables, n_old)
    new_vars, names = append_fidelity(variables, cfg, module.fidelities, FIDS[n_old], e0_row=E0[n_old])
    new_module = Potential(cfg, SPECIES, names, module.avg_num_neighbors)
    g = every_fidelity(n_old + 1)
    reference = jax.eval_shape(new_module.init, jax.random.PRNGKey(0), g, edge_vectors(g))["params"]
    assert jax.tree.map(jnp.shape, reference) == jax.tree.map(jnp.shape, new_vars["params"])
    np.testing.assert_array_equal(new_vars["params"]["fidelity_scale"], np.concatenate([scale, scale[:1]]))
    after = energies(new_module, new_vars, n_old + 1)
    np.testing.assert_allclose(after[:, :n_old], before, atol=1e-6)


# ---- physics with the options on ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["conditioning", "heads"])
def test_invariance_forces_and_padding_with_the_options(x64, mode):
    module = Potential(tiny_config(fidelity_mode=mode, **ALL_ON), SPECIES, ("a", "b"), 4.0)
    fmap = {"a": 0, "b": 1}

    def graph(structures, budget=(200, 2600, 36)):
        return jax.tree.map(jnp.asarray, pad_graph(structures_to_graph(structures, CUTOFF, fmap), *budget))

    variables = init_variables(module, jax.random.PRNGKey(0), graph([molecule()]), e0=E0[:2], scale=0.7)
    s = np.asarray(variables["params"]["fidelity_scale"])
    variables["params"]["fidelity_scale"] = s * np.linspace(0.5, 1.5, s.size).reshape(s.shape)
    run = jax.jit(lambda g: predict(module.apply, variables, g))
    for make, fid in ((molecule, "a"), (triclinic, "b"), (triclinic, "a")):
        st = dataclasses.replace(make(), fidelity=fid)
        n = st.num_atoms
        copies = [displaced(st, i, k, sign * H) for i in range(n) for k in range(3) for sign in (1, -1)]
        batch = [st, transformed(st, ROTATION), transformed(st, REFLECTION)] + copies
        out = jax.tree.map(np.asarray, run(graph(batch)))
        forces = out["forces"][:n]
        assert np.abs(forces).max() > 1e-3
        np.testing.assert_allclose(out["energy"][1:3], out["energy"][0], rtol=1e-10)
        np.testing.assert_allclose(out["forces"][n : 2 * n], forces @ ROTATION.T, atol=1e-10)
        np.testing.assert_allclose(out["forces"][2 * n : 3 * n], forces @ REFLECTION.T, atol=1e-10)
        e_fd = out["energy"][3 : 3 + len(copies)].reshape(n, 3, 2)
        np.testing.assert_allclose(forces, -(e_fd[..., 0] - e_fd[..., 1]) / (2 * H), rtol=1e-6, atol=1e-8)
        alone = jax.tree.map(np.asarray, run(graph([st])))  # same budget, mostly padding
        np.testing.assert_allclose(alone["energy"][0], out["energy"][0], rtol=1e-12)
        np.testing.assert_allclose(alone["forces"][:n], forces, atol=1e-12)
        np.testing.assert_array_equal(alone["forces"][n:], 0.0)
        np.testing.assert_array_equal(alone["energy"][1:], 0.0)
    assert run._cache_size() == 1


# ---- spec, bundle, config ----------------------------------------------------------------------------
def test_spec_and_bundle_round_trip_the_options(tmp_path):
    cfg = config("heads", **ALL_ON)
    spec = ModelSpec(cfg, SPECIES, FIDS[:2], 4.0)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["model"]["fidelity_embedding"] is True
    old = spec.to_dict()
    for key in ALL_ON:  # a manifest written before the options existed: the plain model
        del old["model"][key]
    assert ModelSpec.from_dict(old).config == config("heads")
    graph = every_fidelity(2)
    variables = spec.init(0, jax.tree.map(np.asarray, graph), e0=E0[:2])
    variables["params"]["fidelity_scale"] = variables["params"]["fidelity_scale"] * 1.3
    loaded = load_model(Model(spec, variables).export(tmp_path / "model"))
    assert loaded.spec == spec  # same network ...
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32)),
                        loaded.variables, variables)  # ... and the same (float32) weights: the same predictions
    assert jax.tree.all(same) and loaded.variables["params"]["fidelity_scale"].shape == (2, len(SPECIES))


def test_medium_preset():
    medium = load_preset("medium")
    assert medium.num_layers == 4 and medium.hidden_irreps == "64x0e+32x1o+16x2e" and medium.parity
    assert not (medium.fidelity_embedding or medium.fidelity_scale)
    cfg = load_config(data={"data": {"datasets": [{"path": "x.extxyz"}]}, "model": {"preset": "medium"}})
    assert cfg.model.num_layers == 4


def test_bad_recipe_settings_are_one_line_errors():
    base = {"data": {"datasets": [{"path": "x.extxyz"}]}}
    with pytest.raises(ConfigError, match="train.loss.fidelity_l2 must be >= 0"):
        load_config(data=base, overrides=["train.loss.fidelity_l2=-0.1"]).train.loss.validate()
    with pytest.raises(ConfigError, match="fidelity_scale_per_species needs"):
        load_config(data=base, overrides=["model.fidelity_scale_per_species=true"])


# ---- the L2 penalty --------------------------------------------------------------------------------
def test_heads_mask_is_the_whole_readout_plus_embedding_rows():
    spec = ModelSpec(config("heads", **ALL_ON), SPECIES, FIDS[:2], 4.0)
    g = every_fidelity(2)
    mask = spec.fidelity_weight_mask(jax.eval_shape(spec.module.init, jax.random.PRNGKey(0), g, edge_vectors(g))["params"])
    assert all(np.all(m == 1) for m in jax.tree.leaves(mask["readout"]))
    assert mask["species_embedding"]["linear"]["w[0,0] 6x0e,4x0e"].sum() == 2 * 4
    rest = [m for k, v in mask.items() if k not in ("readout", "species_embedding") for m in jax.tree.leaves(v)]
    assert not any(np.any(m) for m in rest)  # intro/outro linears carry no one-hot in heads mode


def test_fidelity_l2_gradient_touches_only_the_fidelity_weights(x64):
    spec = ModelSpec(config("conditioning", **ALL_ON), SPECIES, FIDS[:2], 4.0)
    labelled = [dataclasses.replace(make(), fidelity=f, energy=-3.0, forces=np.zeros((make().num_atoms, 3)))
                for make in (molecule, triclinic) for f in FIDS[:2]]
    graph = graph_of(labelled, 2)
    batch = jax.tree.map(lambda x: x[None], graph)  # one device
    variables = spec.init(0, jax.tree.map(np.asarray, graph), e0=E0[:2])
    predict_fn = make_predict_fn(spec.module.apply, False)
    fw = np.ones(2, np.float32)
    lam = 0.3
    plain = make_loss_fn(predict_fn, LossSettings(), fw)
    with_l2 = make_loss_fn(predict_fn, LossSettings(fidelity_l2=lam), fw, fidelity_mask=spec.fidelity_weight_mask)
    with pytest.raises(ValueError, match="needs fidelity_mask"):
        make_loss_fn(predict_fn, LossSettings(fidelity_l2=lam), fw)
    params, constants = variables["params"], variables["constants"]

    @jax.jit  # one compilation for both losses and gradients
    def both(p, c):
        return tuple(jax.value_and_grad(lambda q, fn=fn: fn(q, c, batch)[0])(p) for fn in (plain, with_l2))

    (total, g_plain), (total_l2, g_l2) = both(params, constants)
    mask = spec.fidelity_weight_mask(params)
    extra = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), g_l2, g_plain)
    expected = jax.tree.map(lambda w, m: 2 * lam * m * np.asarray(w), params, mask)
    for got, want, m in zip(jax.tree.leaves(extra), jax.tree.leaves(expected), jax.tree.leaves(mask)):
        np.testing.assert_allclose(got, want, atol=1e-12)
        np.testing.assert_array_equal(got[m == 0], 0.0)  # shared weights (and the scale): untouched
    assert sum(float(m.sum()) for m in jax.tree.leaves(mask)) > 0
    embedding = mask["species_embedding"]["linear"]["w[0,0] 6x0e,4x0e"]
    assert np.all(embedding[:2] == 1) and not embedding[2:].any() and not np.any(mask["fidelity_scale"])
    penalty = float(fidelity_l2_penalty(params, mask))
    assert penalty > 0 and float(total_l2) == pytest.approx(float(total) + lam * penalty, rel=1e-12)


@pytest.mark.slow  # ~40 s on a loaded 2-core box (two compilations)
def test_training_step_with_everything_on_compiles_once(tmp_path):
    raw = write_synthetic_dataset(tmp_path)
    raw["model"].update(fidelity_embedding=True, fidelity_scale=True)
    raw["train"]["loss"]["fidelity_l2"] = 0.05
    raw["train"]["ema"] = None
    cfg = load_config(data=raw)
    data = load_data(cfg.data)
    model, _ = initial_model(cfg, data)
    cache = StepCache()
    result = fit(model, data.train, data.valid, cfg.train, budget=batch_budget(cfg, data.train + data.valid),
                 steps=6, eval_every_steps=3, cache=cache, log=lambda _: None)
    assert result.steps == 6 and len(result.history) == 2
    assert cache.compilations == 2 and cache.cache_sizes() == [1, 1]  # one train step, one eval step
    assert not np.allclose(result.model.variables["params"]["fidelity_scale"], 1.0)  # the scale trains
    assert np.all(np.isfinite([h["loss"] for h in result.history]))
