"""One size of the scaling sweep, in its own process so that its peak RSS is its own.

``python -m benchmarks.scaling --atoms 4096 [--preset sevennet-0] [--calls 1]`` prints one JSON line:
atoms, edges, compile_s, call_s (E+F+S of the padded graph), compilations, rss_base_mb (after
imports, model and graph: before the first compilation), peak_rss_mb, and XLA's own buffer sizes
of the compiled E+F+S function (temp = activations kept for the backward pass + scratch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(n_atoms: int, preset: str, calls: int) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks import common, mfjax_side
    from mfjax.physics import predict

    model = mfjax_side.build_model(preset)
    atoms = common.diamond_si(n_atoms)
    t0 = time.perf_counter()
    host_graph = mfjax_side.example_graph(atoms)
    graph_s = time.perf_counter() - t0
    graph = jax.tree.map(jnp.asarray, host_graph)
    traces = {"n": 0}

    def efs(variables, g):
        traces["n"] += 1
        return predict(model.apply_fn, variables, g, compute_stress=True)

    fn = jax.jit(efs)
    rss_base = common.current_rss_mb()
    t0 = time.perf_counter()
    compiled = fn.lower(model.variables, graph).compile()
    compile_s = time.perf_counter() - t0
    peak_after_compile = common.peak_rss_mb()
    mem = compiled.memory_analysis()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(model.variables, graph))  # first run (allocations)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(model.variables, graph))
        times.append(time.perf_counter() - t0)
    out = {
        "atoms": n_atoms,
        "edges": int(host_graph.n_edge[0]),
        "preset": preset,
        "host_graph_s": graph_s,
        "compile_s": compile_s,
        "call_s": min(times) if times else None,
        "atom_steps_per_s": n_atoms / min(times) if times else None,
        "first_call_s": first_s,
        "compilations": traces["n"],
        "rss_base_mb": rss_base,
        "peak_rss_after_compile_mb": peak_after_compile,
        "peak_rss_mb": common.peak_rss_mb(),
    }
    if mem is not None:
        out.update(
            xla_temp_mb=mem.temp_size_in_bytes / 2**20,
            xla_argument_mb=mem.argument_size_in_bytes / 2**20,
            xla_output_mb=mem.output_size_in_bytes / 2**20,
        )
    out["peak_minus_base_kb_per_atom"] = (out["peak_rss_mb"] - rss_base) * 1024 / n_atoms
    # memory that the run itself adds on top of what the compiler left behind
    out["run_peak_minus_compile_peak_kb_per_atom"] = (out["peak_rss_mb"] - peak_after_compile) * 1024 / n_atoms
    if "xla_temp_mb" in out:
        out["xla_temp_kb_per_atom"] = out["xla_temp_mb"] * 1024 / n_atoms
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--preset", default="sevennet-0")
    parser.add_argument("--calls", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.atoms, args.preset, args.calls)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
