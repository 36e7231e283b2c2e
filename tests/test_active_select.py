"""``mfjax select`` (issue 15): the choosers on tiny feature sets (FPS picks the far point first,
k-means++ and random are seeded), the model-based rules on a trained ensemble (disagreement and
the HF-LF rule pick the perturbed structure; FPS on the network's features picks it too), the
extxyz written for ``mfjax label``, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from helpers.models import random_potential_model
from helpers.synthetic import synthetic_atoms, to_structures

from mfjax.active import rules
from mfjax.active.pool import PoolPredictions
from mfjax.active.select import select
from mfjax.cli import main
from mfjax.config import TrainConfig
from mfjax.data import statistics
from mfjax.data.batching import run_budget
from mfjax.model import Model, ModelSpec, load_model
from mfjax.nn.presets import load_preset
from mfjax.training.ensemble import fit_ensemble, init_ensemble
from mfjax.training.setup import example_graph

FAST = {"num_layers": 1, "hidden_irreps": "8x0e+4x1e", "lmax": 1, "radial_hidden": [8]}


def test_fps_picks_the_far_point_first():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [5.0, 5.0], [-1.0, 0.0]])
    assert list(rules.farthest_point(x, 3)) == [4, 5, 3]  # farthest from the mean, then from the picks
    # with a reference set at the outlier, the outlier comes last: everything else is farther
    assert rules.farthest_point(x, 6, reference=x[4:5])[-1] == 4
    # weights: a heavily weighted near point beats the geometric outlier
    w = np.ones(6)
    w[1] = 1e3
    assert rules.farthest_point(x, 1, weights=w)[0] == 1


def test_kmeanspp_and_random_are_seeded_and_distinct():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    a, b, c = rules.kmeans_pp(x, 10, seed=1), rules.kmeans_pp(x, 10, seed=1), rules.kmeans_pp(x, 10, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(set(a)) == 10
    # k-means++ with D^2 weights: a far cluster of 3 points gets a pick among the first 4 with 3 seeds of 3
    far = np.vstack([x, x[:3] + 50.0])
    assert all(set(rules.kmeans_pp(far, 4, seed=s)) & {30, 31, 32} for s in range(3))
    assert np.array_equal(rules.random_choice(30, 5, 3), rules.random_choice(30, 5, 3))
    assert len(set(rules.random_choice(30, 30, 0))) == 30
    with pytest.raises(ValueError, match="cannot choose 31 of 30"):
        rules.top_n(np.zeros(30), 31)


def test_top_n_order_and_ties():
    assert list(rules.top_n(np.array([0.1, 0.5, 0.5, 0.2]), 3)) == [1, 2, 3]


def test_scores_from_member_forces():
    f_lo = [np.zeros((3, 2, 3)) for _ in range(3)]  # K=3 members, 2 atoms, 3 structures
    f_hf = [np.zeros((3, 2, 3)) for _ in range(3)]
    f_hf[1][:, 0, 0] = 0.4  # structure 1: HF and LF differ by 0.4 eV/Å on one atom, members agree
    f_hf[2][:, 1, 2] = [-0.3, 0.0, 0.3]  # structure 2: members disagree at HF (mean difference 0)
    pred = PoolPredictions({}, {"hi": f_hf, "lo": f_lo}, np.zeros((3, 1)), np.array([2, 2, 2]), "hi")
    np.testing.assert_allclose(rules.disagreement(pred, "hi"), [0.0, 0.0, np.std([-0.3, 0.0, 0.3])], atol=1e-12)
    np.testing.assert_allclose(rules.delta_score(pred, "hi", "lo"),
                               [0.0, np.sqrt(0.4**2 / 2), np.std([-0.3, 0.0, 0.3])], atol=1e-12)


@pytest.fixture(scope="module")
def trained():
    lo, hi = synthetic_atoms(16, "lo", seed=0, periodic_every=0), synthetic_atoms(16, "hi", seed=0, periodic_every=0,
                                                                                 sigma_scale=1.05)
    structures = to_structures(lo + hi)
    config = load_preset("small", cutoff=4.0, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=[8])
    spec = ModelSpec(config, (18, 29), ("lo", "hi"), 3.0)
    e0 = statistics.fit_e0(structures, spec.species, spec.fidelities, alpha=1e-6)
    ens = init_ensemble(spec, 3, 0, example_graph(structures[0], spec), e0=e0, scale=statistics.force_rms(structures))
    result = fit_ensemble(ens, structures, [], TrainConfig(lr=0.02, lr_final=0.002),
                          budget=run_budget(structures, 4.0, 8, None, None), steps=80, log=lambda _: None)
    rng = np.random.default_rng(1)
    pool = []
    for k in range(8):  # copies of one training structure, slightly rattled; index 3 heavily rattled
        atoms = lo[0].copy()
        atoms.positions += rng.normal(0.0, 0.5 if k == 3 else 0.02, atoms.positions.shape)
        pool.append(atoms)
    return result.model, pool


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["disagreement", "fps", "weighted_fps"])
def test_model_rules_pick_the_perturbed_structure(trained, rule):
    model, pool = trained
    chosen = select(model, pool, 2, rule, hf="hi", lf="lo")
    assert chosen.indices[0] == 3, (rule, chosen.scores)
    again = select(model, pool, 2, rule, hf="hi", lf="lo")
    assert np.array_equal(chosen.indices, again.indices)


@pytest.mark.slow
def test_cli_writes_a_file_for_mfjax_label(trained, tmp_path, capsys):
    model, pool = trained
    model.export(tmp_path / "model")
    ase.io.write(tmp_path / "pool.extxyz", pool)
    out = tmp_path / "picked.extxyz"
    assert main(["select", str(tmp_path / "model"), str(tmp_path / "pool.extxyz"), "-n", "3", "--rule",
                 "disagreement", "--out", str(out)]) == 0
    picked = ase.io.read(out, ":")
    assert [a.info["pool_index"] for a in picked][0] == 3 and len(picked) == 3
    assert picked[0].info["select_rule"] == "disagreement" and picked[0].info["select_rank"] == 0
    assert picked[0].info["select_score"] > picked[1].info["select_score"] > 0
    assert picked[0].info["structure_id"] == "pool-3" and picked[0].calc is None
    assert "selected 3 of 8 structures by disagreement (HF hi, LF lo)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle")
    single = random_potential_model(**FAST)
    single.export(path / "single")
    Model.ensemble([single, random_potential_model(seed=1, **FAST)]).export(path / "ensemble")
    ase.io.write(path / "pool.extxyz", [ase.Atoms("CH4", positions=np.eye(5, 3) * 1.1 + 0.01 * k) for k in range(4)])
    (path / "bad.extxyz").write_text("not an xyz file\n")
    return path


@pytest.mark.parametrize("args,message", [
    (["-n", "5", "--rule", "random"], "has 4 structures (need 1 <= N <= 4)"),
    (["-n", "0", "--rule", "random"], "need 1 <= N"),
    (["-n", "2", "--rule", "disagreement", "--model", "single"], "needs an ensemble model"),
    (["-n", "2", "--rule", "fps", "--hf", "ccsdt"], "ccsdt"),
    (["-n", "2", "--rule", "random", "--pool", "missing.extxyz"], "no such pool file"),
    (["-n", "2", "--rule", "random", "--pool", "bad.extxyz"], "cannot read pool structures"),
])
def test_bad_input_is_one_line_exit_2(small_bundle, tmp_path, capsys, args, message):
    model, pool = "ensemble", "pool.extxyz"
    if "--model" in args:
        model = args.pop(args.index("--model") + 1)
        args.remove("--model")
    if "--pool" in args:
        pool = args.pop(args.index("--pool") + 1)
        args.remove("--pool")
    rc = main(["select", str(small_bundle / model), str(small_bundle / pool), "--out", str(tmp_path / "o.extxyz"),
               *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_random_selection_through_the_cli_is_seeded(small_bundle, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.extxyz"
        assert main(["select", str(small_bundle / "ensemble"), str(small_bundle / "pool.extxyz"), "-n", "2",
                     "--rule", "random", "--seed", "7", "--out", str(out)]) == 0
        outs.append([a.info["pool_index"] for a in ase.io.read(out, ":")])
    assert outs[0] == outs[1]


def test_fps_on_features_of_an_untrained_ensemble(small_bundle):
    model = load_model(small_bundle / "ensemble")
    pool = ase.io.read(small_bundle / "pool.extxyz", ":")
    far = pool[0].copy()
    far.positions *= 1.6  # a stretched molecule: its summed features lie far from the others'
    chosen = select(model, pool + [far], 2, "fps", hf="r2scan")
    assert chosen.indices[0] == 4
