"""FLOP counting of the benchmark's efficiency row (``benchmarks/flops.py``) on functions whose
FLOPs are known by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root holds benchmarks/

from benchmarks import flops  # noqa: E402


def _loss(a, b):
    return jnp.sin(a @ b).sum()


def test_dot_flops_counts_matmuls_in_nested_and_differentiated_jaxprs():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    matmul = 2 * 64 * 32 * 16
    assert flops.dot_flops(jax.jit(_loss), a, b) == matmul  # inside a pjit equation
    assert flops.dot_flops(jax.grad(_loss), a, b) == 2 * matmul  # forward + one cotangent product
    assert flops.dot_flops(jax.grad(_loss, argnums=(0, 1)), a, b) == 3 * matmul
    # static arguments, as the calculator's jitted call has
    assert flops.dot_flops(lambda a, b, k: _loss(a, b) * k, a, b, 2, static_argnums=2) == matmul


def test_cost_analysis_flops_includes_the_matmul_and_fraction_is_consistent():
    a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
    fn = jax.jit(_loss)
    total = flops.cost_analysis_flops(fn, a, b)
    assert 2 * 64 * 32 * 16 <= total < 1.2 * 2 * 64 * 32 * 16  # + the sine and the sum
    peak = flops.matmul_peak(128, repeats=2)
    assert peak["flops"] == 2 * 128**3 and peak["gflops"] > 0 and len(peak["samples_s"]) == 2
    row = flops.flop_fraction(total, 1e-3, peak, dot=2 * 64 * 32 * 16)
    assert row["achieved_gflops"] == pytest.approx(total / 1e-3 / 1e9)
    assert row["fraction_of_peak"] == pytest.approx(row["achieved_gflops"] / peak["gflops"])
    assert row["split"]["dot_share"] == pytest.approx(2 * 64 * 32 * 16 / total)
