"""Edge embedding: radial basis x smooth cutoff envelope, and spherical harmonics (SPEC §2).

Pure functions of plain arrays, plus ``EdgeEmbedding``, a thin flax shell holding the trainable
Bessel frequencies. Shapes: ``E`` edges; ``B`` radial basis functions.

Zero-length edges (the padding self-loops of ``mfjax.data.graph``) and edges with ``r >= r_c``
(e.g. spare slots of a jax-md neighbour list) are guarded: every norm and division sees a safe
value, their embedding is exactly zero and their gradients are finite (zero).
"""

from __future__ import annotations

import math
from typing import Literal

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def safe_norm(vectors: Array) -> tuple[Array, Array]:
    """Lengths of edge vectors with a gradient that stays finite at zero.

    vectors: [E, 3]. Returns (r [E], nonzero [E] bool). Where a vector is exactly zero, ``r`` is 0
    and its derivative is 0 (the double-``where`` trick), not NaN.
    """
    assert vectors.ndim == 2 and vectors.shape[-1] == 3, vectors.shape
    sq = jnp.sum(vectors**2, axis=-1)
    nonzero = sq > 0.0
    r = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
    return r, nonzero


def bessel_basis(r: Array, frequencies: Array, cutoff: float) -> Array:
    r"""Bessel radial basis :math:`b_n(r) = \frac{2}{r_c} \frac{\sin(k_n r)}{r}`.

    r: [E] lengths (>= 0); frequencies: [B] k_n (initialised to n pi / r_c, trainable).
    Returns [E, B]. At r = 0 the limit 2 k_n / r_c is returned (finite value and gradient).
    """
    assert r.ndim == 1 and frequencies.ndim == 1
    safe_r = jnp.where(r > 0.0, r, 1.0)
    kr = safe_r[:, None] * frequencies[None, :]
    out = jnp.where((r > 0.0)[:, None], jnp.sin(kr) / safe_r[:, None], frequencies[None, :])
    return (2.0 / cutoff) * out


def bessel_frequencies(num_basis: int, cutoff: float) -> Array:
    """[B] initial frequencies k_n = n pi / r_c, n = 1..B."""
    return jnp.arange(1, num_basis + 1, dtype=jnp.float32) * (math.pi / cutoff)


def xplor_envelope(r: Array, cutoff: float, r_on: float) -> Array:
    r"""XPLOR switching function (CHARMM/XPLOR), 1 below r_on, 0 at and beyond r_c.

    .. math:: s(r) = \frac{(r_c^2 - r^2)^2 (r_c^2 + 2 r^2 - 3 r_{on}^2)}{(r_c^2 - r_{on}^2)^3}
        \quad (r_{on} \le r < r_c)

    r: [E]. Returns [E]. C^1-continuous at r_on and r_c.
    """
    r2, on2, c2 = r**2, r_on**2, cutoff**2
    switch = (c2 - r2) ** 2 * (c2 + 2.0 * r2 - 3.0 * on2) / (c2 - on2) ** 3
    return jnp.where(r < r_on, 1.0, jnp.where(r < cutoff, switch, 0.0))


def polynomial_envelope(r: Array, cutoff: float, p: int = 6) -> Array:
    r"""Polynomial envelope of DimeNet/NequIP, with x = r / r_c:

    .. math:: u(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}

    for x < 1 and 0 beyond. r: [E]. Returns [E].
    """
    x = r / cutoff
    u = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * x**p
        + p * (p + 2.0) * x ** (p + 1)
        - p * (p + 1.0) / 2.0 * x ** (p + 2)
    )
    return jnp.where(x < 1.0, u, 0.0)


def envelope(r: Array, cutoff: float, kind: Literal["xplor", "polynomial"]) -> Array:
    """The configured cutoff envelope (XPLOR with r_on = r_c - 0.5, or polynomial p = 6)."""
    if kind == "xplor":
        return xplor_envelope(r, cutoff, r_on=cutoff - 0.5)
    if kind == "polynomial":
        return polynomial_envelope(r, cutoff, p=6)
    raise ValueError(f"unknown envelope {kind!r}")


def sh_irreps(lmax: int, parity: bool) -> e3nn.Irreps:
    """Irreps of the edge spherical harmonics: 0e+1o+2e+... with parity, 0e+1e+2e+... without."""
    return e3nn.Irreps.spherical_harmonics(lmax, p=-1 if parity else 1)


def spherical_harmonics(vectors: Array, lmax: int, parity: bool) -> e3nn.IrrepsArray:
    """Real spherical harmonics of the unit edge vectors, component normalisation.

    vectors: [E, 3]. Returns IrrepsArray [E, (lmax+1)^2] with irreps ``sh_irreps(lmax, parity)``.
    Zero vectors are replaced by a unit vector (their radial weights are zero anyway), so the
    normalisation never divides by zero.
    """
    _, nonzero = safe_norm(vectors)
    safe = jnp.where(nonzero[:, None], vectors, jnp.array([0.0, 0.0, 1.0], vectors.dtype))
    sh = e3nn.spherical_harmonics(
        e3nn.Irreps.spherical_harmonics(lmax), safe, normalize=True, normalization="component"
    )
    out = e3nn.IrrepsArray(sh_irreps(lmax, parity), sh.array)
    assert out.shape == (vectors.shape[0], (lmax + 1) ** 2), out.shape
    return out


def radial_embedding(
    vectors: Array,
    frequencies: Array,
    cutoff: float,
    kind: Literal["xplor", "polynomial"],
) -> Array:
    """Radial features of the edges: bessel_basis(r) * envelope(r), exactly 0 on zero-length edges
    and on edges with r >= r_c.

    vectors: [E, 3]; frequencies: [B]. Returns [E, B].
    """
    r, nonzero = safe_norm(vectors)
    basis = bessel_basis(r, frequencies.astype(r.dtype), cutoff)
    weight = envelope(r, cutoff, kind) * (nonzero & (r < cutoff))
    out = basis * weight[:, None]
    assert out.shape == (vectors.shape[0], frequencies.shape[0]), out.shape
    return out


class EdgeEmbedding(nn.Module):
    """Flax shell: (edge vectors [E, 3]) -> (radial [E, B], spherical harmonics [E, (lmax+1)^2]).

    Holds the trainable Bessel frequencies ``k`` [B] (initialised to n pi / r_c).
    """

    cutoff: float
    num_basis: int
    lmax: int
    parity: bool
    envelope: Literal["xplor", "polynomial"] = "xplor"

    @nn.compact
    def __call__(self, vectors: Array) -> tuple[Array, e3nn.IrrepsArray]:
        k = self.param(
            "bessel_frequencies",
            lambda _key, shape, dtype: bessel_frequencies(shape[0], self.cutoff).astype(dtype),
            (self.num_basis,),
            vectors.dtype,
        )
        radial = radial_embedding(vectors, k, self.cutoff, self.envelope)
        sh = spherical_harmonics(vectors, self.lmax, self.parity)
        return radial, sh
