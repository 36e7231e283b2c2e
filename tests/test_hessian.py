"""``energy_fn``: the energy as a pure function of the positions, with forward and reverse
derivatives. The Hessian from ``jax.hessian`` equals finite differences of the model's forces,
is symmetric and obeys translation and rotation invariance; jvp equals grad . v (float64)."""

from __future__ import annotations

import ase
import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers.models import random_potential_model
from mfjax.data.neighbors import neighbor_list
from mfjax.model.energy import energy_fn


@pytest.fixture(scope="module")
def model():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        m = random_potential_model(species=(1, 6, 8), num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1, seed=3)
        yield m.astype(jnp.float64)
    finally:
        jax.config.update("jax_enable_x64", previous)


def _water():
    atoms = ase.build.molecule("H2O")
    atoms.rattle(0.05, seed=1)  # off any symmetric point, so no derivative vanishes by symmetry
    return atoms


def test_energy_and_forces_equal_predict(model, x64):
    atoms = _water()
    energy = energy_fn(model, atoms, "r2scan")
    pred = model.predict(atoms, "r2scan")
    x = jnp.asarray(atoms.positions)
    value, grad = jax.jit(jax.value_and_grad(energy))(x)
    np.testing.assert_allclose(float(value), pred["energy"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(-np.asarray(grad), pred["forces"], rtol=0, atol=1e-12)
    # another fidelity is another function
    assert abs(float(jax.jit(energy_fn(model, atoms, "pbe"))(x)) - pred["energy"]) > 1e-6


def test_hessian_equals_finite_differences_of_forces(model, x64):
    atoms = _water()
    energy = energy_fn(model, atoms, "pbe")
    x0 = np.asarray(atoms.positions)
    n = len(atoms)
    hessian = np.asarray(jax.jit(jax.hessian(energy))(jnp.asarray(x0))).reshape(3 * n, 3 * n)

    # central differences of the forces of Model.predict (its own neighbour list, no skin)
    h = 1e-4
    fd = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        step = np.zeros(3 * n)
        step[k] = h
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions = x0 + step.reshape(n, 3)
        minus.positions = x0 - step.reshape(n, 3)
        f_plus, f_minus = model.predict(plus, "pbe")["forces"], model.predict(minus, "pbe")["forces"]
        fd[:, k] = -(f_plus - f_minus).ravel() / (2 * h)
    scale = np.max(np.abs(hessian))
    assert scale > 1e-3  # a non-trivial Hessian
    np.testing.assert_allclose(hessian, fd, rtol=0, atol=1e-6 * scale)

    # symmetric; reverse over reverse gives the same matrix
    np.testing.assert_allclose(hessian, hessian.T, rtol=0, atol=1e-12 * scale)
    rev_rev = np.asarray(jax.jit(jax.jacrev(jax.grad(energy)))(jnp.asarray(x0))).reshape(3 * n, 3 * n)
    np.testing.assert_allclose(rev_rev, hessian, rtol=0, atol=1e-12 * scale)

    # translation invariance: three exact zero modes (uniform shifts along x, y, z)
    translations = np.kron(np.ones((n, 1)), np.eye(3))  # [3n, 3]
    np.testing.assert_allclose(hessian @ translations, 0.0, rtol=0, atol=1e-11 * scale)
    # rotation invariance, second order: v^T H v + g . (A A x) = 0 for the generator A of each axis
    grad = np.asarray(jax.grad(energy)(jnp.asarray(x0))).ravel()
    centred = x0 - x0.mean(axis=0)
    for axis in np.eye(3):
        generator = np.cross(np.eye(3), axis)  # A x = axis x x
        v = (centred @ generator.T).ravel()
        vv = (centred @ generator.T @ generator.T).ravel()
        assert abs(v @ hessian @ v + grad @ vv) < 1e-10 * scale * (1 + v @ v)


def test_jvp_equals_grad_dot_v(model, x64):
    atoms = _water()
    energy = energy_fn(model, atoms, "pbe")
    x = jnp.asarray(atoms.positions)
    v = jnp.asarray(np.random.default_rng(0).standard_normal(x.shape))

    @jax.jit
    def derivatives(x, v):
        value, slope = jax.jvp(energy, (x,), (v,))
        d_force = jax.jvp(jax.grad(energy), (x,), (v,))[1]  # forward over reverse: H v
        return value, slope, energy(x), jax.grad(energy)(x), d_force, jax.hessian(energy)(x)

    value, slope, value_ref, grad, d_force, hessian = derivatives(x, v)
    np.testing.assert_allclose(value, value_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slope, jnp.vdot(grad, v), rtol=0, atol=1e-12)
    hv = jnp.einsum("iajb,jb->ia", hessian, v)
    np.testing.assert_allclose(d_force, hv, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(hv))))


def test_periodic_cell_within_the_skin(model, x64):
    """A fixed periodic cell: pairs in the skin (outside the cutoff) contribute nothing, displaced
    geometries within skin / 2 still equal Model.predict (which rebuilds its neighbour list), and
    the Hessian has the three translation zero modes."""
    rng = np.random.default_rng(2)
    atoms = ase.Atoms("CH2O", positions=rng.uniform(0, 4.2, (4, 3)), cell=np.diag([4.2, 4.4, 4.6]), pbc=True)
    skin = 0.6
    within, with_skin = (len(neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r).senders)
                         for r in (model.cutoff, model.cutoff + skin))
    assert with_skin > within  # the graph holds pairs beyond the cutoff
    energy = energy_fn(model, atoms, "pbe", skin=skin)
    value_and_grad = jax.jit(jax.value_and_grad(energy))
    for shift in (0.0, 0.29):
        moved = atoms.copy()
        moved.positions += shift * rng.uniform(-1, 1, (4, 3)) / np.sqrt(3)  # |displacement| < skin / 2
        value, grad = value_and_grad(jnp.asarray(moved.positions))
        pred = model.predict(moved, "pbe")
        np.testing.assert_allclose(float(value), pred["energy"], rtol=0, atol=1e-11)
        np.testing.assert_allclose(-np.asarray(grad), pred["forces"], rtol=0, atol=1e-11)
    hessian = np.asarray(jax.jit(jax.hessian(energy))(jnp.asarray(atoms.positions))).reshape(12, 12)
    np.testing.assert_allclose(hessian, hessian.T, rtol=0, atol=1e-11)
    translations = np.kron(np.ones((4, 1)), np.eye(3))
    np.testing.assert_allclose(hessian @ translations, 0.0, rtol=0, atol=1e-10)


def test_bad_positions_shape(model, x64):
    energy = energy_fn(model, _water(), "pbe")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        energy(jnp.zeros((4, 3)))
