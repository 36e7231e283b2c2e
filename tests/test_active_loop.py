"""The active-learning loop (issue 15): select -> reveal withheld HF labels -> retrain, one state file
per round, the learning curve rewritten each round, resumable after a kill (finished rounds are not
retrained and the continued loop ends as an uninterrupted one)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from helpers.synthetic import synthetic_atoms, to_structures

from mfjax.active.loop import make_trainer, pyscf_labels, run_loop, withheld_labels
from mfjax.config import TrainConfig
from mfjax.data.batching import run_budget
from mfjax.label.levels import parse_level
from mfjax.label.runner import label_frames
from mfjax.nn.presets import load_preset
from mfjax.training.ensemble import EnsembleStepCache

_SPEC = importlib.util.spec_from_file_location(
    "active_user_loop", Path(__file__).resolve().parent.parent / "experiments" / "active" / "loop.py")
user_loop = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(user_loop)


@pytest.fixture(scope="module")
def setup():
    lf = to_structures(synthetic_atoms(8, "lo", seed=0, periodic_every=0))
    pool_atoms = synthetic_atoms(10, "hi", seed=1, periodic_every=0, sigma_scale=1.05)
    pool = to_structures(pool_atoms)
    test = to_structures(synthetic_atoms(4, "hi", seed=2, periodic_every=0, sigma_scale=1.05))
    config = load_preset("small", cutoff=4.0, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=[8])
    budget = run_budget(lf + pool + test, 4.0, 8, None, None)
    trainer = make_trainer(config, (18, 29), ("lo", "hi"), lf, TrainConfig(lr=0.01, e0_alpha=1e-6), steps=3,
                           ensemble=2, budget=budget, cache=EnsembleStepCache())
    calls = []

    def train(hf, seed):
        calls.append(len(hf))
        return trainer(hf, seed)

    return pool_atoms, pool, test, train, calls


def _run(setup, out, rounds=2):
    pool_atoms, pool, test, train, _ = setup
    return run_loop(out, pool=pool_atoms, label=withheld_labels(pool), initial=[0, 1], test=test, train=train,
                    rule="disagreement", per_round=2, rounds=rounds, seed=0, hf="hi", lf="lo", log=lambda _: None)


@pytest.mark.slow
def test_loop_rounds_curve_and_resume(setup, tmp_path):
    calls = setup[4]
    records = _run(setup, tmp_path / "a")
    assert [r["n_hf"] for r in records] == [2, 4, 6] and calls == [2, 4, 6]
    picked = records[0]["selected"] + records[1]["selected"]
    assert len(set(picked)) == 4 and not set(picked) & {0, 1} and records[2]["selected"] == []
    assert records[1]["labelled"] == [0, 1] + records[0]["selected"]
    rows = list(csv.DictReader((tmp_path / "a" / "learning_curve.csv").read_text().splitlines()))
    assert [int(r["n_hf"]) for r in rows] == [2, 4, 6] and all(float(r["forces_mae_ev_a"]) > 0 for r in rows)
    # a loop killed after round 1 (round 2's file missing) continues: rounds 0-1 are not retrained
    (tmp_path / "b").mkdir()
    for r in (0, 1):
        (tmp_path / "b" / f"round_{r:02d}.json").write_text((tmp_path / "a" / f"round_{r:02d}.json").read_text())
    calls.clear()
    resumed = _run(setup, tmp_path / "b")
    assert calls == [6]
    assert resumed[2]["labelled"] == records[2]["labelled"]
    assert resumed[2]["forces_mae_ev_a"] == pytest.approx(records[2]["forces_mae_ev_a"], rel=1e-5)
    assert json.loads((tmp_path / "b" / "round_02.json").read_text())["n_hf"] == 6
    # a finished loop reruns nothing; more rounds extend it
    calls.clear()
    assert len(_run(setup, tmp_path / "b")) == 3 and calls == []


def test_pyscf_labeller_labels_the_chosen_frames_once(tmp_path):
    pytest.importorskip("pyscf")

    def water(shift):
        return ase.Atoms("OH2", positions=[[0.0, 0.0, 0.119], [0.0, 0.763 + shift, -0.477], [0.0, -0.763, -0.477]])

    pool = [water(0.0), water(0.05), water(-0.05)]
    out = tmp_path / "hf.extxyz"
    label = pyscf_labels(pool, [parse_level("pbe/sto-3g")], out, "hi")
    got = label([2, 0])
    assert [s.structure_id for s in got] == ["pool-2", "pool-0"] and all(s.fidelity == "hi" for s in got)
    assert all(np.isfinite(s.energy) and s.forces.shape == (3, 3) for s in got)
    assert got[0].energy != got[1].energy
    again = label([0])  # already in the output file: read back, not recomputed
    assert len(ase.io.read(out, ":")) == 2 and again[0].energy == got[1].energy


@pytest.mark.slow
def test_user_pool_loop_with_pyscf(tmp_path):
    pytest.importorskip("pyscf")
    rng = np.random.default_rng(0)

    def water():
        atoms = ase.Atoms("OH2", positions=[[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
        atoms.positions += rng.normal(0.0, 0.03, (3, 3))
        return atoms

    lf = []
    for _ in range(4):
        atoms = water()
        atoms.calc = LennardJones(sigma=1.0, epsilon=0.05, rc=3.0)
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        lf.append(atoms)
    ase.io.write(tmp_path / "lf.extxyz", lf)
    ase.io.write(tmp_path / "pool.extxyz", [water() for _ in range(3)])
    test_atoms = [water()]
    test_atoms[0].info["structure_id"] = "test-0"
    label_frames(test_atoms, [parse_level("pbe/sto-3g")], tmp_path / "test.extxyz", fidelities=["r2scan"],
                 progress=False)
    args = ["--lf", str(tmp_path / "lf.extxyz"), "--pool", str(tmp_path / "pool.extxyz"), "--test",
            str(tmp_path / "test.extxyz"), "--level", "pbe/sto-3g", "--rule", "disagreement", "--initial", "1",
            "--per-round", "1", "--rounds", "1", "--steps", "2", "--ensemble", "2", "--cutoff", "3.0",
            "--out", str(tmp_path / "run")]
    records = user_loop.main(args, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=[8])
    assert [r["n_hf"] for r in records] == [1, 2]
    labelled = ase.io.read(tmp_path / "run" / "hf_labels.extxyz", ":")
    assert len(labelled) == 2 and {a.info["fidelity"] for a in labelled} == {"r2scan"}
    assert user_loop.main(args, num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, radial_hidden=[8]) == records
