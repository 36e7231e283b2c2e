"""Layer-level tests: radial basis, envelopes, spherical harmonics guards, gate, convolution
padding, and the SevenNet-0 parameter counts."""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import Structure
from mfjax.nn.layers import convolution, convolution_irreps, gate_irreps
from mfjax.nn.model import Potential, count_parameters, init_variables
from mfjax.nn.presets import load_preset
from mfjax.data.graph import edge_vectors
from mfjax.nn.radial import (
    bessel_basis,
    bessel_frequencies,
    polynomial_envelope,
    radial_embedding,
    spherical_harmonics,
    xplor_envelope,
)


def _two_atoms() -> Structure:
    return Structure(
        species=np.array([14, 14]),
        positions=np.array([[0.0, 0.0, 0.0], [1.2, 0.3, 0.1]]),
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        fidelity="a",
    )


def _count(preset: str, n_species: int, fidelities: tuple[str, ...]) -> int:
    graph = structures_to_graph([_two_atoms()], 5.0, {"a": 0})
    graph = jax.tree.map(jnp.asarray, pad_graph(graph, 3, 4, 2))
    module = Potential(load_preset(preset), tuple(range(1, n_species + 1)), fidelities, 10.0)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), graph, edge_vectors(graph))
    return count_parameters(shapes["params"])


def test_sevennet0_parameter_count_one_fidelity():
    # SevenNet-0: 842,440 trainable parameters (89 species, no fidelity one-hot).
    assert _count("sevennet-0", 89, ("pbe",)) == 842_440


def test_sevennet0_parameter_count_two_fidelities():
    # SevenNet multi-fidelity (119 species, 2 fidelities): 849,736 = 842,440 + 30*128 + 3,456.
    assert _count("sevennet-0", 119, ("pbe", "r2scan")) == 849_736


def test_bessel_basis_values_and_initial_frequencies():
    rc = 5.0
    k = bessel_frequencies(8, rc)
    np.testing.assert_allclose(k, np.arange(1, 9) * math.pi / rc, rtol=1e-6)
    r = jnp.array([0.0, 1.0, 2.5])
    b = bessel_basis(r, k, rc)
    assert b.shape == (3, 8)
    np.testing.assert_allclose(b[1], 2 / rc * np.sin(np.asarray(k) * 1.0) / 1.0, rtol=1e-5)
    np.testing.assert_allclose(b[0], 2 / rc * np.asarray(k), rtol=1e-6)  # r -> 0 limit


def test_envelopes_limits_and_smoothness():
    rc = 5.0
    r = jnp.array([0.0, 4.0, 4.5, 4.75, 4.999999, 5.0, 6.0])
    x = xplor_envelope(r, rc, rc - 0.5)
    np.testing.assert_allclose(x[:3], 1.0)
    assert 0.0 < float(x[3]) < 1.0 and float(x[4]) < 1e-6
    np.testing.assert_array_equal(x[5:], 0.0)
    # C1 at r_on and r_c: one-sided derivatives match
    dx = jax.vmap(jax.grad(lambda t: xplor_envelope(t, rc, rc - 0.5)))
    np.testing.assert_allclose(dx(jnp.array([4.5 - 1e-5, 4.5 + 1e-5, rc - 1e-5])), 0.0, atol=1e-3)
    p = polynomial_envelope(r, rc)
    assert float(p[0]) == 1.0 and float(p[4]) < 1e-6
    np.testing.assert_array_equal(p[5:], 0.0)


def test_zero_and_far_edges_embed_to_exact_zero_with_finite_gradients():
    vectors = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.0, 5.0], [0.0, 6.0, 0.0]])
    k = bessel_frequencies(4, 5.0)

    def f(v):
        radial = radial_embedding(v, k, 5.0, "xplor")
        sh = spherical_harmonics(v, 2, parity=True)
        return jnp.sum(radial * jnp.sum(sh.array, axis=1, keepdims=True)), radial

    (value, radial), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(vectors)
    np.testing.assert_array_equal(radial[0], 0.0)
    np.testing.assert_array_equal(radial[2:], 0.0)  # r == r_c and r > r_c
    assert np.all(np.asarray(radial[1]) != 0.0)
    assert np.all(np.isfinite(grad)) and np.isfinite(value)
    np.testing.assert_array_equal(grad[0], 0.0)
    np.testing.assert_array_equal(grad[3], 0.0)


def test_spherical_harmonics_parity_labels():
    v = jnp.array([[0.3, -0.2, 0.9]])
    assert str(spherical_harmonics(v, 2, parity=True).irreps) == "1x0e+1x1o+1x2e"
    assert str(spherical_harmonics(v, 2, parity=False).irreps) == "1x0e+1x1e+1x2e"
    sh = spherical_harmonics(v, 2, parity=True).array
    np.testing.assert_allclose(jnp.sum(sh[:, 1:4] ** 2), 3.0, rtol=1e-5)  # component norm


def test_gate_irreps():
    # scalars + one 0e gate per non-scalar irrep + the non-scalars (equivariance: model tests)
    assert gate_irreps(e3nn.Irreps("4x0e+2x1o+1x2e")) == e3nn.Irreps("7x0e+2x1o+1x2e")
    assert gate_irreps(e3nn.Irreps("128x0e+64x1e+32x2e")) == e3nn.Irreps("224x0e+64x1e+32x2e")
    assert gate_irreps(e3nn.Irreps("8x0e")) == e3nn.Irreps("8x0e")


def test_convolution_ignores_padding_edges_and_is_equivariant():
    irreps_x = e3nn.Irreps("3x0e+2x1o")
    filt = tuple(e3nn.Irrep(ir) for ir in ("0e", "1o", "2e"))
    x = e3nn.normal(irreps_x, jax.random.PRNGKey(0), (4,))
    vectors = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    senders = jnp.array([0, 1, 2, 3, 1, 2])
    receivers = jnp.array([1, 0, 3, 2, 2, 1])
    n_paths = convolution_irreps(irreps_x, e3nn.Irreps("0e+1o+2e"), filt).num_irreps
    weights = jax.random.normal(jax.random.PRNGKey(2), (6, n_paths))

    @jax.jit
    def conv(xx, vv, s, r, w):
        sh = spherical_harmonics(vv, 2, parity=True)
        return convolution(xx, sh, w, s, r, 4, 3.0, filt)

    ref = conv(x, vectors, senders, receivers, weights)
    # padding edges: zero vectors, zero radial weights -> no contribution
    pad_v = jnp.concatenate([vectors, jnp.zeros((3, 3))])
    pad_w = jnp.concatenate([weights, jnp.zeros((3, n_paths))])
    pad_s = jnp.concatenate([senders, jnp.array([3, 3, 3])])
    pad_r = jnp.concatenate([receivers, jnp.array([3, 3, 3])])
    np.testing.assert_allclose(conv(x, pad_v, pad_s, pad_r, pad_w).array, ref.array, atol=1e-6)
    # rotate inputs -> rotated output
    rot = e3nn.rand_matrix(jax.random.PRNGKey(3), ())
    out_rot = conv(x.transform_by_matrix(rot), vectors @ rot.T, senders, receivers, weights)
    np.testing.assert_allclose(out_rot.array, ref.transform_by_matrix(rot).array, atol=1e-5)


def test_init_variables_matches_module_init_structure():
    graph = structures_to_graph([_two_atoms()], 3.0, {"a": 0, "b": 1})
    graph = jax.tree.map(jnp.asarray, pad_graph(graph, 3, 4, 2))
    cfg = load_preset("small", num_layers=2, hidden_irreps="4x0e+2x1o+2x2e", radial_hidden=[8], num_basis=4)
    module = Potential(cfg, (14,), ("a", "b"), 3.0)
    variables = init_variables(module, jax.random.PRNGKey(0), graph, e0=[[1.0], [2.0]], scale=2.0)
    reference = jax.eval_shape(module.init, jax.random.PRNGKey(0), graph, edge_vectors(graph))
    assert jax.tree.structure(variables["params"]) == jax.tree.structure(reference["params"])
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(reference["params"])):
        assert a.shape == b.shape and a.dtype == b.dtype
    k = variables["params"]["edge_embedding"]["bessel_frequencies"]
    np.testing.assert_allclose(k, np.arange(1, 5) * np.pi / cfg.cutoff, rtol=1e-6)
    assert variables["constants"]["e0"].shape == (2, 1) and float(variables["constants"]["scale"]) == 2.0
    big = variables["params"]["block_0"]["linear_outro"]
    assert all(abs(float(jnp.std(w)) - 1.0) < 0.3 for w in big.values() if w.size > 20)


def test_nequip_self_connection_has_one_linear_per_species():
    graph = structures_to_graph([_two_atoms()], 3.0, {"a": 0})
    graph = jax.tree.map(jnp.asarray, pad_graph(graph, 3, 4, 2))
    cfg = load_preset("small", num_layers=2, hidden_irreps="4x0e+2x1o", lmax=1, self_connection="nequip")
    module = Potential(cfg, (1, 8, 14), ("a",), 3.0)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), graph, edge_vectors(graph))["params"]
    sc = shapes["block_0"]["self_connection"]
    # block 0: 4x0e -> gate input 6x0e+2x1o; only the 0e path exists, indexed by species
    assert {k: v.shape for k, v in sc.items()} == {"w[0,0] 4x0e,6x0e": (3, 4, 6)}
