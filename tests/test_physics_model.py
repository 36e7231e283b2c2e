"""The full potential through ``mfjax.physics.predict`` (float64), on a molecule and a periodic
triclinic cell: rotation/reflection invariance of the energy, equivariance of forces (F R^T per
row) and stress (R S R^T), translation and permutation invariance, forces and stress against
central finite differences, padding invariance and single == batched predictions.

Everything runs through one jitted ``predict`` on one padded budget (plus one larger budget for
the padding test), so the file compiles the model twice."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import Structure
from mfjax.nn.model import Potential, init_variables
from mfjax.nn.presets import load_preset
from mfjax.physics import predict

CUTOFF = 3.0
FIDELITIES = {"a": 0, "b": 1}
SPECIES = (1, 6, 8, 14)
BUDGET = (260, 2400, 50)  # large enough for all finite-difference copies in one batch
H = 1e-5


def tiny_config(**overrides):
    kw = dict(num_layers=2, hidden_irreps="4x0e+2x1o+2x2e", lmax=2, num_basis=4, radial_hidden=[8], cutoff=CUTOFF)
    kw.update(overrides)
    return load_preset("small", **kw)


def molecule(fidelity: str = "a") -> Structure:
    positions = np.array(
        [[0.0, 0.0, 0.0], [1.1, 0.2, -0.1], [-0.3, 1.2, 0.4], [0.5, -0.9, 1.0], [1.6, 1.1, 0.9]]
    )
    return Structure(np.array([6, 1, 8, 6, 1]), positions, np.zeros((3, 3)), np.zeros(3, bool), fidelity)


def triclinic(fidelity: str = "b") -> Structure:
    cell = np.array([[4.0, 0.0, 0.0], [0.8, 3.8, 0.0], [0.5, 0.6, 4.2]])
    frac = np.array([[0.0, 0.0, 0.0], [0.26, 0.24, 0.27], [0.5, 0.52, 0.03], [0.74, 0.21, 0.55]])
    return Structure(np.array([14, 6, 14, 6]), frac @ cell, cell, np.ones(3, bool), fidelity)


def to_graph(structures, budget=BUDGET):
    graph = structures_to_graph(structures, CUTOFF, FIDELITIES)
    return jax.tree.map(jnp.asarray, pad_graph(graph, *budget))


@pytest.fixture(scope="module")
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="module")
def model(x64):
    module = Potential(tiny_config(), SPECIES, tuple(FIDELITIES), avg_num_neighbors=4.0)
    e0 = np.array([[-1.0, -2.0, -3.0, -4.0], [-1.5, -2.5, -3.5, -4.5]])
    variables = init_variables(module, jax.random.PRNGKey(0), to_graph([molecule()]), e0=e0, scale=0.7)
    run = jax.jit(lambda v, g: predict(module.apply, v, g))
    return lambda graph: jax.tree.map(np.asarray, run(variables, graph))


def displaced(s: Structure, atom: int, axis: int, step: float) -> Structure:
    positions = s.positions.copy()
    positions[atom, axis] += step
    return dataclasses.replace(s, positions=positions)


def strained(s: Structure, a: int, b: int, step: float) -> Structure:
    """Cell and positions deformed by (I + step e_a e_b^T) (row vectors: x -> x (I + eps))."""
    deform = np.eye(3)
    deform[a, b] += step
    return dataclasses.replace(s, positions=s.positions @ deform, cell=s.cell @ deform)


def transformed(s: Structure, q: np.ndarray) -> Structure:
    return dataclasses.replace(s, positions=s.positions @ q.T, cell=s.cell @ q.T)


ROTATION = Rotation.from_euler("zyx", [0.7, -1.1, 2.3]).as_matrix()
REFLECTION = ROTATION @ np.diag([1.0, 1.0, -1.0])


@pytest.mark.parametrize("make", [molecule, triclinic])
@pytest.mark.parametrize("q", [ROTATION, REFLECTION], ids=["rotation", "reflection"])
def test_rotation_and_reflection(model, make, q):
    s = make()
    ref, out = model(to_graph([s])), model(to_graph([transformed(s, q)]))
    n = s.num_atoms
    assert abs(ref["energy"][0]) > 1e-3 and np.abs(ref["forces"][:n]).max() > 1e-4
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["forces"][:n], ref["forces"][:n] @ q.T, atol=1e-10)
    np.testing.assert_allclose(out["stress"][0], q @ ref["stress"][0] @ q.T, atol=1e-10)
    if make is triclinic:
        assert np.abs(ref["stress"][0]).max() > 1e-5
    else:
        np.testing.assert_array_equal(ref["stress"], 0.0)  # no volume, no stress


@pytest.mark.parametrize("make", [molecule, triclinic])
def test_translation_and_permutation(model, make):
    s = make()
    ref = model(to_graph([s]))
    n = s.num_atoms
    shifted = s.positions + np.array([1.3, -0.7, 2.1])
    if s.pbc.any():  # translate and wrap back into the cell: the neighbour shifts change
        frac = np.linalg.solve(s.cell.T, shifted.T).T % 1.0
        shifted = frac @ s.cell
    out = model(to_graph([dataclasses.replace(s, positions=shifted)]))
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-10)
    np.testing.assert_allclose(out["stress"], ref["stress"], atol=1e-10)

    perm = np.roll(np.arange(n), 2)[::-1]
    permuted = dataclasses.replace(s, positions=s.positions[perm], species=s.species[perm])
    out = model(to_graph([permuted]))
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-10)
    np.testing.assert_allclose(out["forces"][:n], ref["forces"][perm], atol=1e-10)
    np.testing.assert_allclose(out["stress"], ref["stress"], atol=1e-10)


def test_single_equals_batched_and_padding_is_inert(model):
    mol, cell = molecule(), triclinic()
    n_mol, n_cell = mol.num_atoms, cell.num_atoms
    batched = model(to_graph([mol, cell]))
    single_mol, single_cell = model(to_graph([mol])), model(to_graph([cell]))
    np.testing.assert_allclose(batched["energy"][:2], [single_mol["energy"][0], single_cell["energy"][0]], rtol=1e-12)
    np.testing.assert_allclose(batched["forces"][:n_mol], single_mol["forces"][:n_mol], atol=1e-12)
    np.testing.assert_allclose(batched["forces"][n_mol : n_mol + n_cell], single_cell["forces"][:n_cell], atol=1e-12)
    np.testing.assert_allclose(batched["stress"][1], single_cell["stress"][0], atol=1e-12)
    # padding nodes, edges and graphs: zero forces, energies and stresses, finite everywhere
    for out, n_real, g_real in ((batched, n_mol + n_cell, 2), (single_mol, n_mol, 1)):
        assert all(np.isfinite(v).all() for v in out.values())
        np.testing.assert_array_equal(out["forces"][n_real:], 0.0)
        np.testing.assert_array_equal(out["energy"][g_real:], 0.0)
        np.testing.assert_array_equal(out["stress"][g_real:], 0.0)
    # a larger budget (more padding nodes, edges and graphs) changes nothing
    bigger = model(to_graph([cell], budget=(300, 2600, 53)))
    np.testing.assert_allclose(bigger["energy"][0], single_cell["energy"][0], rtol=1e-12)
    np.testing.assert_allclose(bigger["forces"][:n_cell], single_cell["forces"][:n_cell], atol=1e-12)
    np.testing.assert_allclose(bigger["stress"][0], single_cell["stress"][0], atol=1e-12)


@pytest.mark.parametrize("make", [molecule, triclinic])
def test_forces_match_finite_differences(model, make):
    s = make()
    ref = model(to_graph([s]))
    copies = [displaced(s, i, k, sign * H) for i in range(s.num_atoms) for k in range(3) for sign in (1, -1)]
    energies = model(to_graph(copies))["energy"][: len(copies)].reshape(s.num_atoms, 3, 2)
    fd_forces = -(energies[..., 0] - energies[..., 1]) / (2 * H)
    assert np.abs(ref["forces"][: s.num_atoms]).max() > 1e-3
    np.testing.assert_allclose(ref["forces"][: s.num_atoms], fd_forces, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ref["forces"][: s.num_atoms].sum(axis=0), 0.0, atol=1e-12)


def test_stress_matches_finite_differences_triclinic(model):
    s = triclinic()
    ref = model(to_graph([s]))
    copies = [strained(s, a, b, sign * H) for a in range(3) for b in range(3) for sign in (1, -1)]
    energies = model(to_graph(copies))["energy"][: len(copies)].reshape(3, 3, 2)
    volume = abs(np.linalg.det(s.cell))
    fd_stress = (energies[..., 0] - energies[..., 1]) / (2 * H) / volume
    assert np.abs(ref["stress"][0]).max() > 1e-4
    np.testing.assert_allclose(ref["stress"][0], fd_stress, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ref["stress"][0], ref["stress"][0].T, atol=1e-12)
