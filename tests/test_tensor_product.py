"""The convolution's hand-written tensor product equals e3nn's, with its first and second
derivatives (float64), for the irreps the presets use and for odd parities and l = 3."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.nn.layers import convolution, convolution_e3nn, convolution_irreps
from mfjax.nn.tensor_product import tensor_product_plan

CASES = [
    # (node irreps, sh lmax, parity, allowed message irreps)
    ("6x0e+4x1e+3x2e", 2, False, ("0e", "1e", "2e")),  # sevennet-0 shape (no parity)
    ("5x0e+3x1o+2x2e", 2, True, ("0e", "1o", "2e")),  # small preset shape
    ("5x0e+3x1o+2x2e", 2, True, ("0e",)),  # last layer: scalars only
    ("3x0e", 2, True, ("0e", "1o", "2e")),  # first layer: scalar input
    ("4x0e+2x0o+3x1o+3x1e+2x2e+2x2o+1x3o", 3, True, ("0e", "0o", "1o", "1e", "2e", "2o", "3o", "3e")),
]
NUM_NODES, NUM_EDGES, AVG = 7, 31, 3.0


def _problem(case, seed=0):
    irreps, lmax, parity, filt = case
    irreps_x = e3nn.Irreps(irreps)
    irreps_sh = e3nn.Irreps.spherical_harmonics(lmax, p=-1 if parity else 1)
    filt = tuple(e3nn.Irrep(ir) for ir in filt)
    rng = np.random.default_rng(seed)
    mid = convolution_irreps(irreps_x, irreps_sh, filt)
    arrays = dict(
        x=rng.standard_normal((NUM_NODES, irreps_x.dim)),
        sh=rng.standard_normal((NUM_EDGES, irreps_sh.dim)),
        w=rng.standard_normal((NUM_EDGES, mid.num_irreps)),
    )
    senders = rng.integers(0, NUM_NODES, NUM_EDGES)
    receivers = rng.integers(0, NUM_NODES, NUM_EDGES)
    probe = rng.standard_normal((NUM_NODES, mid.dim))

    def scalar(conv):
        def f(x, sh, w):
            out = conv(
                e3nn.IrrepsArray(irreps_x, x), e3nn.IrrepsArray(irreps_sh, sh), w,
                senders, receivers, NUM_NODES, AVG, filt,
            )
            return out, jnp.sum(jnp.sin(out.array) * probe)

        return f

    return arrays, scalar


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "/" + ",".join(c[3]) for c in CASES])
def test_convolution_equals_e3nn_with_derivatives(case, x64):
    arrays, scalar = _problem(case)
    args = (arrays["x"], arrays["sh"], arrays["w"])
    mine, ref = scalar(convolution), scalar(convolution_e3nn)

    out_mine, out_ref = mine(*args)[0], ref(*args)[0]  # eager: checks the irreps too
    assert out_mine.irreps == out_ref.irreps.regroup()  # the same array, paths of one irrep merged
    np.testing.assert_allclose(out_mine.array, out_ref.array, rtol=0, atol=1e-12)

    grad = lambda f: jax.grad(lambda *a: f(*a)[1], argnums=(0, 1, 2))  # noqa: E731
    for g_mine, g_ref in zip(jax.jit(grad(mine))(*args), jax.jit(grad(ref))(*args)):
        np.testing.assert_allclose(g_mine, g_ref, rtol=0, atol=1e-11)

    if e3nn.Irreps(case[0]).lmax > 2:
        return  # second order below for the preset shapes only (l = 3 compiles for a minute)

    # second order: what training does (the loss contains forces, i.e. a first derivative)
    def second(f):
        return jax.grad(
            lambda *a: sum(jnp.sum(jnp.cos(g)) for g in grad(f)(*a)), argnums=(0, 1, 2)
        )

    for g_mine, g_ref in zip(jax.jit(second(mine))(*args), jax.jit(second(ref))(*args)):
        np.testing.assert_allclose(g_mine, g_ref, rtol=0, atol=1e-10)


def test_plan_weights_cover_every_column_once():
    irreps_x = e3nn.Irreps("128x0e+64x1e+32x2e")
    sh = e3nn.Irreps.spherical_harmonics(2, p=1)
    filt = tuple(e3nn.Irrep(ir) for ir in ("0e", "1e", "2e"))
    plan = tensor_product_plan(irreps_x, sh, filt)
    mid = convolution_irreps(irreps_x, sh, filt)
    columns = np.concatenate([np.arange(p.weight_start, p.weight_start + p.mul) for p in plan.paths])
    assert sorted(columns.tolist()) == list(range(mid.num_irreps)) == list(range(960))
    assert plan.irreps_out == mid.sort().irreps
    assert plan.irreps_out.dim == 3136
    # every output component of every path couples to at least one input component
    assert all(all(inputs for inputs in p.nonzero) for p in plan.paths)
    assert tensor_product_plan(irreps_x, sh, filt) is plan  # cached


def test_float32_jit_keeps_dtype():
    arrays, scalar = _problem(CASES[1])
    args = tuple(jnp.asarray(a, jnp.float32) for a in (arrays["x"], arrays["sh"], arrays["w"]))
    f = jax.jit(lambda *a: jax.grad(lambda *b: scalar(convolution)(*b)[1], argnums=(0, 1, 2))(*a))
    for g, a in zip(f(*args), args):
        assert g.dtype == jnp.float32 and g.shape == a.shape and np.all(np.isfinite(g))


# ---- forward mode and mixed second derivatives (jvp, jacfwd, hessian) against e3nn -----------------
def test_convolution_forward_mode_equals_e3nn(x64):
    """Every mode combination of first and second derivatives equals e3nn's (small preset shape)."""
    arrays, scalar = _problem(CASES[1])
    args = (arrays["x"], arrays["sh"], arrays["w"])
    rng = np.random.default_rng(1)
    tangents = tuple(rng.standard_normal(a.shape) for a in args)

    def derivatives(conv):
        def messages(*a):
            return scalar(conv)(*a)[0].array

        def value(*a):
            return scalar(conv)(*a)[1]

        grad = jax.grad(value, argnums=(0, 1, 2))
        dot = lambda gs: sum(jnp.vdot(g, t) for g, t in zip(gs, tangents))  # noqa: E731
        return dict(
            jvp=jax.jvp(messages, args, tangents),
            jacfwd=jax.jacfwd(value, argnums=(0, 1, 2))(*args),
            # Hessian-vector products in the four mode combinations
            fwd_rev=jax.jvp(grad, args, tangents)[1],
            rev_fwd=jax.grad(lambda *a: jax.jvp(value, a, tangents)[1], argnums=(0, 1, 2))(*args),
            rev_rev=jax.grad(lambda *a: dot(grad(*a)), argnums=(0, 1, 2))(*args),
            fwd_fwd=jax.jvp(lambda *a: jax.jvp(value, a, tangents)[1], args, tangents)[1],
            # full Hessians in (features, harmonics): forward over reverse, reverse over reverse
            hessian=jax.hessian(value, argnums=(0, 1))(*args),
            jacrev_grad=jax.jacrev(jax.grad(value, argnums=(0, 1)), argnums=(0, 1))(*args),
        )

    mine, ref = jax.jit(lambda: (derivatives(convolution), derivatives(convolution_e3nn)))()
    flat = jax.tree.leaves
    assert len(flat(mine)) == len(flat(ref))
    for a, b in zip(flat(mine["jvp"]), flat(ref["jvp"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
    for key in ("jacfwd", "fwd_rev", "rev_fwd", "rev_rev", "fwd_fwd", "hessian", "jacrev_grad"):
        for a, b in zip(flat(mine[key]), flat(ref[key])):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=key)
    # the modes agree with each other, too
    for a, b in zip(flat(mine["fwd_rev"]) + flat(mine["hessian"]), flat(mine["rev_rev"]) + flat(mine["jacrev_grad"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
