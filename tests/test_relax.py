"""Relaxation (``mfjax.materials.relax`` and ``mfjax relax``): the Lennard-Jones fcc lattice constant
against ASE's own ``LennardJones`` (same optimiser and filter, and the zero-pressure root found
without any optimiser), pressure, fixed-cell force convergence, compilations per batch with the real
model, and bad inputs exiting 2 with one line."""

from __future__ import annotations

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase import units
from ase.calculators.lj import LennardJones
from ase.filters import ExpCellFilter, FrechetCellFilter
from ase.optimize import BFGS, LBFGS
from scipy.optimize import brentq

from helpers.models import random_potential_model

from mfjax import cli
from mfjax.errors import ConfigError
from mfjax.materials.config import RelaxConfig
from mfjax.materials.relax import CalculatorPool, relax, single_points
from mfjax.md.lennard_jones import lennard_jones_model

SIGMA, EPS, CUTOFF = 2.0, 1.0, 6.0  # eps of fidelity "high"; large, so forces are well above float32 noise


@pytest.fixture(autouse=True)
def _one_blas_thread(one_blas_thread):
    """Every test here runs with one BLAS thread (conftest.one_blas_thread)."""


@pytest.fixture(scope="module")
def real_model():
    return random_potential_model(num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1)


@pytest.fixture(scope="module")
def lj():
    return lennard_jones_model({"low": 0.5, "high": EPS}, sigma=SIGMA, cutoff=CUTOFF, species=(18,), smooth=False)


def ase_lj() -> LennardJones:
    return LennardJones(sigma=SIGMA, epsilon=EPS, rc=CUTOFF, smooth=False)


def fcc(a: float) -> ase.Atoms:
    return ase.build.bulk("Ar", "fcc", a=a)


def zero_stress_lattice_constant(pressure_gpa: float) -> float:
    """The cubic lattice constant where ASE's LJ stress equals -pressure: no optimiser involved."""

    def residual(a: float) -> float:
        atoms = fcc(a)
        atoms.calc = ase_lj()
        return float(np.mean(atoms.get_stress()[:3])) + pressure_gpa * units.GPa

    return brentq(residual, 2.6, 3.6, xtol=1e-10)


@pytest.mark.parametrize("cell_filter,pressure,optimizer", [("frechet", 0.0, "BFGS"), ("exp", 2.0, "LBFGS")])
def test_variable_cell_lj_fcc_lattice_constant(lj, cell_filter, pressure, optimizer):
    start = fcc(3.16)
    cfg = RelaxConfig(fidelity="high", cell="variable", cell_filter=cell_filter, pressure=pressure,
                      fmax=1e-4, steps=400, optimizer=optimizer)
    (result,) = relax(lj, [start], cfg)
    assert result.converged and result.fmax < 1e-4 and result.energy < result.initial_energy
    a_relaxed = result.atoms.cell.cellpar()[0] * np.sqrt(2.0)  # primitive -> conventional cubic
    np.testing.assert_allclose(result.atoms.cell.cellpar()[3:], 60.0, atol=1e-3)  # stays fcc
    a_root = zero_stress_lattice_constant(pressure)
    np.testing.assert_allclose(a_relaxed, a_root, rtol=1e-4)
    reference = start.copy()  # ASE's own LJ, same optimiser and filter
    reference.calc = ase_lj()
    filt = {"frechet": FrechetCellFilter, "exp": ExpCellFilter}[cell_filter]
    {"BFGS": BFGS, "LBFGS": LBFGS}[optimizer](filt(reference, scalar_pressure=pressure * units.GPa), logfile=None).run(fmax=1e-4, steps=400)
    np.testing.assert_allclose(result.atoms.cell.array, reference.cell.array, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.energy, reference.get_potential_energy(), rtol=1e-5)
    np.testing.assert_allclose(result.atoms.get_stress()[:3], -pressure * units.GPa, atol=2e-5)


def test_fixed_cell_rattled_reaches_fmax(lj):
    atoms = fcc(zero_stress_lattice_constant(0.0)) * (2, 2, 2)
    atoms.rattle(0.08, seed=3)
    atoms.calc = ase_lj()
    assert np.abs(atoms.get_forces()).max() > 0.5
    cfg = RelaxConfig(fidelity="high", cell="fixed", fmax=0.01, steps=300, optimizer="FIRE")
    (result,) = relax(lj, [atoms], cfg)
    out = result.atoms
    assert result.converged and out.info["relax_converged"] and out.info["relax_steps"] == result.steps > 0
    assert out.info["fidelity"] == "high" and out.info["relax_fmax"] == result.fmax < 0.01
    np.testing.assert_array_equal(out.cell.array, atoms.cell.array)
    check = out.copy()  # ASE's LJ agrees the relaxed structure is relaxed
    check.calc = ase_lj()
    assert np.sqrt((check.get_forces() ** 2).sum(1)).max() < 0.01
    np.testing.assert_allclose(out.get_forces(), check.get_forces(), atol=1e-4)
    np.testing.assert_allclose(out.get_potential_energy(), check.get_potential_energy(), rtol=1e-5)
    assert np.abs(atoms.positions - out.positions).max() > 0.01  # atoms moved; the input is untouched


def test_batch_of_similar_structures_compiles_at_most_twice(real_model):
    model = real_model
    frames = []
    for k, (strain, drop) in enumerate([(1.0, False), (1.01, False), (0.99, True), (1.0, True)]):
        atoms = ase.build.bulk("Si", "diamond", a=5.43 * strain, cubic=True)
        if drop:
            del atoms[k]
        atoms.rattle(0.05, seed=k)
        frames.append(atoms)
    pool = CalculatorPool(model, "r2scan")
    cfg = RelaxConfig(fidelity="r2scan", steps=3, optimizer="BFGS", maxstep=0.05)
    results = relax(model, frames, cfg, pool=pool)
    assert pool.compile_count <= 2 and len(pool.calculators) == 1
    assert [len(r.atoms) for r in results] == [len(a) for a in frames]  # input order
    for atoms, r in zip(frames, results):
        assert r.steps == 3 and not r.converged and r.energy < r.initial_energy
        assert np.abs(r.atoms.positions - atoms.positions).max() < 0.2
    before = pool.compile_count  # single points of the same structures reuse the bucket
    energies = [a.get_potential_energy() for a in single_points(model, frames, "r2scan", pool=pool)]
    assert pool.compile_count == before
    np.testing.assert_allclose(energies, [r.initial_energy for r in results], rtol=1e-6)


def test_cli_relax_writes_structures_and_trajectories(tmp_path, capsys):
    frames = []
    for k, a in enumerate((3.35, 3.4, 3.45)):
        atoms = fcc(a) * (2, 1, 1)
        atoms.rattle(0.03, seed=k)
        frames.append(atoms)
    ase.io.write(tmp_path / "in.extxyz", frames)
    out, traj = tmp_path / "relaxed.extxyz", tmp_path / "traj"
    code = cli.main(["relax", "toy-lj", str(tmp_path / "in.extxyz"), "--fidelity", "high", "--cell", "variable",
                     "--fmax", "0.001", "--optimizer", "BFGS", "--out", str(out), "--traj", str(traj)])
    assert code == 0
    text = capsys.readouterr().out
    assert "3 structures, " in text and " compilations" in text and "in.extxyz, frame 2: converged" in text
    relaxed = ase.io.read(out, ":")
    assert len(relaxed) == 3
    for k, atoms in enumerate(relaxed):
        assert atoms.info["relax_converged"] and atoms.info["fidelity"] == "high" and atoms.info["relax_steps"] > 0
        assert atoms.get_forces().shape == (2, 3) and atoms.get_stress().shape == (6,)
        steps = ase.io.read(traj / f"{k:04d}.traj", ":")
        assert len(steps) == atoms.info["relax_steps"] + 1
        np.testing.assert_allclose(steps[-1].get_potential_energy(), atoms.get_potential_energy(), rtol=1e-6)
    volumes = [a.get_volume() for a in relaxed]
    np.testing.assert_allclose(volumes, volumes[0], rtol=5e-3)  # one lattice constant from three starts


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    good = tmp_path / "ar.extxyz"
    ase.io.write(good, fcc(3.1))
    molecule = tmp_path / "mol.xyz"
    ase.io.write(molecule, ase.build.molecule("CH4"))
    cases = [
        (["relax", "toy-lj", str(good), "--fidelity", "medium"], "unknown fidelity 'medium'"),
        (["relax", "toy-lj", str(tmp_path / "missing.extxyz"), "--fidelity", "high"], "missing.extxyz: file does not exist"),
        (["relax", "toy-lj", str(molecule), "--fidelity", "high", "--cell", "variable"], "mol.xyz, frame 0: a variable-cell"),
        (["relax", "toy-lj", str(good), "--fidelity", "high", "--fmax", "0"], "fmax must be > 0"),
        (["relax", "toy-lj", str(good), "--fidelity", "high", "--set", "pressure=1.0"], "pressure needs"),
        (["relax", "toy-lj", str(good), "--fidelity", "high", "--set", "fmx=0.1"], "did you mean 'fmax'"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)
    with pytest.raises(ConfigError, match=r"structure 0: element\(s\) Ar \(Z=18\) not known"):
        relax(lennard_jones_model(species=(14,)), [fcc(3.1)], RelaxConfig(fidelity="high"))


def test_cli_element_not_in_exported_model(real_model, tmp_path, capsys):
    path = real_model.export(tmp_path / "model")
    structures = tmp_path / "ge.extxyz"
    ase.io.write(structures, [ase.build.bulk("Si", "diamond", a=5.43), ase.build.bulk("Ge", "diamond", a=5.65)])
    assert cli.main(["relax", str(path), str(structures), "--fidelity", "pbe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ge.extxyz, frame 1: element(s) Ge (Z=32) not known" in err


def test_one_calculator_per_padding_bucket(lj):
    small = [fcc(3.1), fcc(3.12)]  # 1 atom each
    large = [fcc(3.1) * (3, 3, 3), fcc(3.11) * (3, 3, 2)]  # 27 and 18 atoms: another edge bucket
    frames = [small[0], large[1], small[1], large[0]]
    pool = CalculatorPool(lj, "high")
    plan = pool.plan(frames)
    buckets = {k: bucket for k, bucket in plan}
    assert buckets[0] == buckets[2] != buckets[1] == buckets[3]
    assert [k for k, _ in plan if k in (1, 3)] == [3, 1]  # the largest of a bucket first
    results = single_points(lj, frames, "high", pool=pool)
    assert [len(a) for a in results] == [len(a) for a in frames]  # input order
    assert pool.compile_count == len(pool.calculators) == 2
    for atoms, out in zip(frames, results):
        reference = atoms.copy()
        reference.calc = ase_lj()
        np.testing.assert_allclose(out.get_potential_energy(), reference.get_potential_energy(), rtol=1e-5)
