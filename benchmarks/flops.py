"""FLOPs of a jitted call (XLA's cost analysis) against the matmul peak measured in the same run.

``achieved / peak`` says how much of the machine one E+F+S call uses: the FLOPs XLA counts in the
optimised executable (``compiled.cost_analysis()["flops"]``) over the measured seconds per call,
divided by the float32 GFLOP/s of one large ``jnp.dot`` (2 n^3 FLOPs) timed after warm-up. The
FLOPs are split into matrix products (``dot_general`` in the jaxpr: radial MLPs, linears) and
the rest (element-wise tensor-product rows, gathers, scatters, nonlinearities) to show where the
time that is not at peak goes.
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp


def cost_analysis_flops(jitted, *args) -> float:
    """FLOPs of one call of ``jitted(*args)`` by XLA's cost analysis of the optimised executable.

    jax 0.10 returns one dict; older versions a list with one dict per executable (summed).
    ``lower(...).compile()`` of a function already called with these shapes is served from
    jax's in-memory cache (no second compilation).
    """
    cost = jitted.lower(*args).compile().cost_analysis()
    parts = cost if isinstance(cost, (list, tuple)) else [cost]
    return float(sum(p.get("flops", 0.0) for p in parts))


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def jaxpr_dot_flops(jaxpr) -> float:
    """2 * M * N * K summed over the ``dot_general`` equations of ``jaxpr`` (nested ones too;
    a loop body counts once)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = math.prod(lhs[i] for i in lhs_contract)
            total += 2.0 * k * math.prod(eqn.outvars[0].aval.shape)
        for sub in _subjaxprs(eqn):
            total += jaxpr_dot_flops(sub)
    return total


def dot_flops(fn, *args, static_argnums=()) -> float:
    """Matrix-product FLOPs of ``fn(*args)`` from its jaxpr (see ``jaxpr_dot_flops``)."""
    return jaxpr_dot_flops(jax.make_jaxpr(fn, static_argnums=static_argnums)(*args).jaxpr)


def matmul_peak(n: int = 2048, repeats: int = 5, seed: int = 0) -> dict:
    """float32 GFLOP/s of an n x n @ n x n ``jnp.dot`` (2 n^3 FLOPs), median of ``repeats`` timed
    calls after one warm-up call (compilation)."""
    ka, kb = jax.random.split(jax.random.PRNGKey(seed))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        samples.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    median = statistics.median(samples)
    return {"n": n, "flops": flops, "samples_s": samples, "median_s": median, "gflops": flops / median / 1e9,
            "best_gflops": flops / min(samples) / 1e9}


def flop_fraction(flops: float, seconds: float, peak: dict, dot: float | None = None) -> dict:
    """Achieved GFLOP/s of a call of ``flops`` taking ``seconds``, and its fraction of ``peak``."""
    achieved = flops / seconds / 1e9
    out = {"flops": flops, "seconds_per_call": seconds, "achieved_gflops": achieved, "peak": peak,
           "fraction_of_peak": achieved / peak["gflops"]}
    if dot is not None:
        out["split"] = {"dot_flops": dot, "other_flops": max(flops - dot, 0.0), "dot_share": dot / flops if flops else None}
    return out
