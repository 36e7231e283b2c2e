"""The ASE calculator: LJ oracle (float64 and float32), stress sign and finite differences,
fidelity errors, and bounded recompilation during ASE MD."""

from __future__ import annotations

import ase
import ase.build
import numpy as np
import pytest

from helpers.models import random_potential_model
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.lj import LennardJones

from mfjax.errors import FidelityError
from mfjax.model.calculator import MfjaxCalculator
from mfjax.md.lennard_jones import lennard_jones_model

SIGMA, CUTOFF = 2.0, 5.0


def triclinic_cell() -> ase.Atoms:
    """8-atom triclinic Si cell thinner than 2 x cutoff (several images of each neighbour)."""
    atoms = ase.build.bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.1, 0.2], [0.3, 0.0, -0.1], [0.1, 0.2, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def molecule() -> ase.Atoms:
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.positions *= 1.6  # keep LJ pairs out of the steep core
    return atoms


def reference(atoms: ase.Atoms, eps: float) -> ase.Atoms:
    ref = atoms.copy()
    ref.calc = LennardJones(epsilon=eps, sigma=SIGMA, rc=CUTOFF, smooth=False)
    return ref


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("make", [triclinic_cell, molecule])
def test_lj_oracle(request, precision, make):
    if precision == "float64":
        request.getfixturevalue("x64")
    rtol = 1e-9 if precision == "float64" else 2e-5
    model = lennard_jones_model({"low": 0.010, "high": 0.013}, sigma=SIGMA, cutoff=CUTOFF, smooth=False)
    atoms = make()
    atoms.calc = model.calculator("high")
    ref = reference(atoms, 0.013)
    scale_f = np.abs(ref.get_forces()).max()
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=rtol, abs=1e-6 * rtol / 1e-9)
    assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=rtol * 10 * scale_f)
    if atoms.pbc.any():
        scale_s = np.abs(ref.get_stress()).max()
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=rtol * 10 * scale_s)
    else:
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()


def test_stress_matches_finite_differences(x64):
    model = lennard_jones_model(sigma=SIGMA, cutoff=CUTOFF, smooth=True)
    atoms = triclinic_cell()
    atoms.calc = model.calculator("low")
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_stress(), numerical, atol=1e-8)
    # ASE sign: a cell stretched beyond the LJ minimum is held together -> tensile (positive) stress
    atoms.set_cell(atoms.cell.array * 1.3, scale_atoms=True)
    assert np.trace(atoms.get_stress(voigt=False)) > 0


def test_forces_match_finite_differences(x64):
    model = lennard_jones_model(sigma=SIGMA, cutoff=CUTOFF, smooth=True)
    atoms = molecule()
    atoms.calc = model.calculator("high")
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numerical, atol=1e-7)


def test_fidelity_selects_parameters():
    model = lennard_jones_model({"low": 0.010, "high": 0.020}, sigma=SIGMA, cutoff=CUTOFF)
    atoms = molecule()
    energies = {}
    for name in model.fidelities:
        atoms.calc = MfjaxCalculator(model, fidelity=name)
        energies[name] = atoms.get_potential_energy()
    assert energies["high"] == pytest.approx(2.0 * energies["low"], rel=1e-5)


def test_fidelity_errors_list_names():
    model = lennard_jones_model({"pbe": 0.01, "r2scan": 0.02})
    with pytest.raises(FidelityError, match="pbe, r2scan"):
        MfjaxCalculator(model)
    with pytest.raises(FidelityError, match=r"unknown fidelity 'scan'.*pbe, r2scan"):
        MfjaxCalculator(model, fidelity="scan")
    single = lennard_jones_model({"pbe": 0.01})
    assert MfjaxCalculator(single).fidelity == "pbe"


def test_ase_md_compiles_a_few_times():
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    model = lennard_jones_model(sigma=2.2, cutoff=CUTOFF, smooth=True)
    atoms = ase.build.bulk("Si", "diamond", a=5.43, cubic=True)
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    calc = model.calculator("high")
    atoms.calc = calc
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(40)
    assert calc.compile_count <= 3
    assert abs(atoms.get_total_energy() - e0) < 1e-3 * len(atoms)
    capacity = calc.capacity
    atoms.calc = calc
    bigger = atoms.repeat((1, 1, 2))
    bigger.calc = calc
    bigger.get_forces()
    assert calc.capacity[0] > capacity[0] and calc.capacity[1] > capacity[1]  # grows, never shrinks
    atoms.get_forces()
    assert calc.capacity[0] >= capacity[0]


def test_real_model_calculator_runs_both_fidelities():

    model = random_potential_model(num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1)
    atoms = triclinic_cell()
    results = {}
    for name in model.fidelities:
        atoms.calc = model.calculator(name)
        results[name] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        assert np.isfinite(results[name][0]) and np.all(np.isfinite(results[name][1]))
        np.testing.assert_allclose(results[name][1].sum(axis=0), 0.0, atol=1e-4)
    assert results["pbe"][0] != results["r2scan"][0]


def test_forces_only_callers_get_the_ef_function(x64):
    """ASE MD asks for forces only: once a stress goes unread the calculator runs E+F (one more
    compilation, none after), with E and F equal to the E+F+S call's; asking for stress again
    switches back without recompiling."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    model = random_potential_model(num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1).astype(np.float64)
    atoms = triclinic_cell()
    calc = model.calculator("pbe")
    atoms.calc = calc
    first = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    assert calc.compile_count == 1 and "stress" in calc.results
    atoms.positions += 1e-3
    atoms.get_forces()  # the stress above was read: still E+F+S
    assert "stress" in calc.results and calc.compile_count == 1
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(5)  # forces only; the last stress goes unread
    assert "stress" not in calc.results and calc.compile_count == 2
    ef_calls = calc.compile_count
    atoms.positions -= atoms.positions - triclinic_cell().positions  # back to the first geometry
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert "stress" not in calc.results and calc.compile_count == ef_calls
    np.testing.assert_allclose(energy, first[0], rtol=1e-12)
    np.testing.assert_allclose(forces, first[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), first[2], rtol=0, atol=1e-12)  # E+F+S again, compiled before
    assert calc.compile_count == ef_calls
