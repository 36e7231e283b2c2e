"""jax-md energy functions agree with the ASE calculator (energy, forces, stress) in free space
and periodic triclinic cells, for both neighbour-list kinds, fractional or Cartesian positions,
Sparse or OrderedSparse lists, with the LJ stand-in and the real model."""

from __future__ import annotations

import dataclasses

import ase
import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import quantity

from mfjax.errors import FidelityError
from mfjax.md.jaxmd import ase_stress, box_from_cell, energy_fn_for
from helpers.models import random_potential_model
from mfjax.md.lennard_jones import lennard_jones_model


def small_triclinic() -> ase.Atoms:
    atoms = ase.build.bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))  # 8 atoms, width ~ 6.3 Å
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.1, 0.2], [0.3, 0.0, -0.1], [0.1, 0.2, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=3)
    return atoms


def large_triclinic() -> ase.Atoms:
    atoms = ase.build.bulk("Si", "diamond", a=5.43).repeat((4, 4, 4))  # 64 atoms, width ~ 12.5 Å
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.1], [0.1, 0.0, 0.3], [-0.2, 0.1, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def molecule() -> ase.Atoms:
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.positions *= 1.6
    return atoms


def jaxmd_results(model, fidelity, atoms, *, fractional=False, ordered=False, multi_image=None):
    periodic = bool(atoms.pbc.any())
    box = box_from_cell(atoms.cell.array) if periodic else None
    pot = energy_fn_for(model, fidelity, atoms.numbers, box, fractional=fractional, ordered=ordered, multi_image=multi_image)
    R = jnp.asarray(atoms.get_scaled_positions() if fractional else atoms.positions)
    nbr = pot.neighbor_fn.allocate(R)
    energy, grad = jax.value_and_grad(pot.energy_fn)(R, neighbor=nbr)
    stress = np.asarray(ase_stress(pot, R, nbr)) if periodic else None
    return pot, R, nbr, float(energy), -np.asarray(grad), stress


CASES = [
    ("molecule", molecule, {}),
    ("small-frac", small_triclinic, {"fractional": True}),
    ("small-cart", small_triclinic, {}),
    ("small-ordered", small_triclinic, {"ordered": True}),
    ("large-minimage", large_triclinic, {}),
    ("large-minimage-frac", large_triclinic, {"fractional": True}),
    ("large-multi", large_triclinic, {"multi_image": True}),
]


@pytest.mark.parametrize("name,make,kwargs", CASES, ids=[c[0] for c in CASES])
def test_jaxmd_matches_calculator_lj(x64, name, make, kwargs):
    model = lennard_jones_model(sigma=2.0, cutoff=5.0, smooth=True)
    atoms = make()
    atoms.calc = model.calculator("high")
    pot, *_, energy, forces, stress = jaxmd_results(model, "high", atoms, **kwargs)
    if name.startswith("large") and "multi_image" not in kwargs:
        assert not pot.multi_image
    if name.startswith("small"):
        assert pot.multi_image
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-10)
    if stress is not None:
        np.testing.assert_allclose(stress, atoms.get_stress(voigt=False), atol=1e-12)


@pytest.fixture(scope="module")
def tiny_model():
    """The real ``Potential`` code path, small enough to compile quickly."""
    return random_potential_model(num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1)


@pytest.mark.parametrize("make", [molecule, small_triclinic], ids=["molecule", "triclinic"])
def test_jaxmd_matches_calculator_real_model(x64, tiny_model, make):
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tiny_model.variables)
    model = dataclasses.replace(tiny_model, variables=variables)
    atoms = make()
    atoms.calc = model.calculator("r2scan")
    *_, energy, forces, stress = jaxmd_results(model, "r2scan", atoms, fractional=atoms.pbc.any())
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-10)
    if stress is not None:
        np.testing.assert_allclose(stress, atoms.get_stress(voigt=False), atol=1e-12)


def test_quantity_stress_is_minus_ase_stress(x64):
    model = lennard_jones_model(sigma=2.0, cutoff=5.0)
    atoms = small_triclinic()
    pot, R, nbr, *_, stress = jaxmd_results(model, "low", atoms, fractional=True)
    jaxmd_stress = quantity.stress(pot.energy_fn, R, pot.box, neighbor=nbr)
    np.testing.assert_allclose(np.asarray(jaxmd_stress), -stress, atol=1e-12)


@pytest.mark.slow
def test_float32_real_model(tiny_model):
    model = tiny_model
    atoms = small_triclinic()
    atoms.calc = model.calculator("pbe")
    *_, energy, forces, stress = jaxmd_results(model, "pbe", atoms, fractional=True)
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-5)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-5)


def test_skin_masks_pairs_beyond_cutoff(x64):
    model = lennard_jones_model(sigma=2.0, cutoff=5.0)
    atoms = large_triclinic()
    box = box_from_cell(atoms.cell.array)
    pot = energy_fn_for(model, "low", atoms.numbers, box, dr_threshold=1.0)
    R = jnp.asarray(atoms.positions)
    nbr = pot.neighbor_fn.allocate(R)
    moved = atoms.copy()
    moved.positions += np.random.default_rng(0).normal(scale=0.1, size=moved.positions.shape)
    nbr = nbr.update(jnp.asarray(moved.positions))  # within the skin: the list is not rebuilt
    moved.calc = model.calculator("low")
    energy = pot.energy_fn(jnp.asarray(moved.positions), neighbor=nbr)
    assert float(energy) == pytest.approx(moved.get_potential_energy(), rel=1e-10)


def test_unknown_fidelity_raises():
    with pytest.raises(FidelityError, match="low, high"):
        energy_fn_for(lennard_jones_model(), "dft", np.array([14, 14]))
