"""An analytic oracle through the same graph / neighbour-list / derivative code: a Lennard-Jones
``apply_fn`` fed to ``mfjax.physics.predict`` must reproduce ASE's LennardJones energy, forces and
stress on a periodic triclinic cell, tightly in float64 and loosely in float32."""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.lj import LennardJones
from ase.stress import voigt_6_to_full_3x3_stress

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import structure_from_atoms
from mfjax.nn.radial import safe_norm
from mfjax.physics import predict
from mfjax.data.graph import node_mask, num_edges, num_nodes

SIGMA, EPSILON, RC = 2.0, 0.0104, 4.5


def lj_apply(params, graph, edge_vectors):
    """Atomic LJ energies: half the shifted pair energy 4 eps ((s/r)^12 - (s/r)^6) - V(r_c) of
    every edge with 0 < r < r_c, summed at the receiver (ASE's non-smooth LennardJones)."""
    sigma, epsilon, rc = params["sigma"], params["epsilon"], params["rc"]
    r, nonzero = safe_norm(edge_vectors)
    inside = nonzero & (r < rc)
    c6 = (sigma / jnp.where(inside, r, 1.0)) ** 6
    shift = 4 * epsilon * ((sigma / rc) ** 12 - (sigma / rc) ** 6)
    pair = jnp.where(inside, 4 * epsilon * (c6**2 - c6) - shift, 0.0)
    atomic = 0.5 * jax.ops.segment_sum(pair, graph.receivers, num_segments=num_nodes(graph))
    return jnp.where(node_mask(graph), atomic, 0.0)


def triclinic_argon() -> ase.Atoms:
    cell = np.array([[5.6, 0.0, 0.0], [1.1, 5.3, 0.0], [0.8, -0.9, 5.9]])
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float) / 2
    rng = np.random.default_rng(7)
    frac = grid + rng.normal(scale=0.06, size=grid.shape)
    return ase.Atoms("Ar8", scaled_positions=frac, cell=cell, pbc=True)


def _compare(atoms: ase.Atoms, rtol: float, atol_f: float, atol_s: float) -> None:
    atoms.calc = LennardJones(sigma=SIGMA, epsilon=EPSILON, rc=RC)
    e_ref = atoms.get_potential_energy()
    f_ref = atoms.get_forces()
    s_ref = voigt_6_to_full_3x3_stress(atoms.get_stress())

    graph = structures_to_graph([structure_from_atoms(atoms, "lj")], RC, {"lj": 0})
    graph = jax.tree.map(jnp.asarray, pad_graph(graph, num_nodes(graph) + 3, num_edges(graph) + 10, 3))
    dtype = graph.nodes.positions.dtype
    params = {k: jnp.asarray(v, dtype) for k, v in dict(sigma=SIGMA, epsilon=EPSILON, rc=RC).items()}
    out = jax.jit(lambda p, g: predict(lj_apply, p, g))(params, graph)
    n = len(atoms)
    assert np.abs(f_ref).max() > 5e-3 and np.abs(s_ref).max() > 1e-4  # a non-trivial check
    np.testing.assert_allclose(float(out["energy"][0]), e_ref, rtol=rtol)
    np.testing.assert_allclose(np.asarray(out["forces"][:n]), f_ref, atol=atol_f)
    np.testing.assert_allclose(np.asarray(out["stress"][0]), s_ref, atol=atol_s)
    np.testing.assert_array_equal(np.asarray(out["forces"][n:]), 0.0)


def test_lennard_jones_matches_ase_float64(x64):
    _compare(triclinic_argon(), rtol=1e-10, atol_f=1e-10, atol_s=1e-12)


def test_lennard_jones_matches_ase_float32():
    assert not jax.config.jax_enable_x64
    _compare(triclinic_argon(), rtol=1e-5, atol_f=2e-5, atol_s=2e-7)
