"""Where the time of one small call goes: E+F+S through the ASE calculator, and the jax-md MD step.

    python benchmarks/breakdown.py [--atoms 64] [--calls 20] [--json OUT.json]

Three measurements on rattled diamond Si, preset sevennet-0 (random weights, float32), as in
``run.py``'s inference and md sections:

1. host pieces of one ``MfjaxCalculator.calculate`` (median of ``--calls``, perf_counter and
   process CPU time): the neighbour list (vesin), the padded graph (``single_graph``), the whole
   calculate for E+F+S and for forces only (what ASE MD asks), and the jitted function alone on a
   device-resident graph;
2. jitted variants on the same graph: energy only (the forward pass), E+F, E+F+S, so that the
   gradient and the strain derivative are priced separately;
3. XLA op time of the jitted E+F+S call and of one jax-md NVT episode from a ``jax.profiler``
   trace: every executed HLO thunk (events on XLA's worker threads) is attributed, through the
   ``op_name`` metadata of the instruction in ``compiled.as_text()``, to a part of the model
   (radial MLP, node linears, edge embedding, gathers, scatters, the other [E, u]
   tensor-product rows, node-level work, neighbour list, integrator) and to the forward or the
   backward (``transpose(...)``) pass. Shares are of the summed op time (both threads).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import diamond_si  # noqa: E402
from benchmarks.mfjax_side import FIDELITY, build_model, jaxmd_case  # noqa: E402
from mfjax.data.neighbors import neighbor_list  # noqa: E402
from mfjax.data.single import single_graph  # noqa: E402
from mfjax.model.calculator import MfjaxCalculator  # noqa: E402
from mfjax.data.graph import edge_vectors  # noqa: E402
from mfjax.physics import graph_energies, predict  # noqa: E402

_LINE = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\([^=]*?\)|\S+) ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_LINEARS = ("linear_intro", "linear_outro", "self_connection", "species_embedding", "readout")


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (result shape, op_name metadata) for every instruction of the module."""
    out = {}
    for line in hlo_text.splitlines():
        m = _LINE.match(line)
        if m:
            op = _OP_NAME.search(line)
            out[m.group(1)] = (m.group(2), op.group(1) if op else "")
    return out


def part_of(name: str, shape: str, op_name: str, n_edge: int) -> str:
    """The part of the computation an executed HLO instruction belongs to (see the module docstring)."""
    if "radial_mlp" in op_name:
        return "radial MLP (matmuls + silu)"
    if any(k in op_name for k in _LINEARS):
        return "node linears, self-connection, readout"
    if "edge_embedding" in op_name:
        return "edge embedding (Bessel, envelope, SH)"
    if re.search(r"block_\d", op_name):
        if "scatter" in name:
            return "scatters (forward: messages to receivers; backward: to senders)"
        if "gather" in name:
            return "gathers (forward: x rows by sender; backward: cotangents by receiver)"
        first = re.search(r"\[(\d+)", shape)
        if first and int(first.group(1)) == n_edge:
            return "tensor-product rows [E, u] (messages, couplings)"
        return "node-level (gate, layout)"
    if "neighbor" in op_name or "cell_list" in op_name or "partition" in op_name:
        return "jax-md neighbour list"
    if "Potential" in op_name or "jvp(" in op_name:
        return "edge vectors, strain, forces, energy sum"
    if "simulate" in op_name or "nvt" in op_name or "step" in op_name or "while" in op_name:
        return "integrator and rest"
    return "other (copies, broadcasts, no metadata)"


def op_profile(fn, hlo_text: str, n_edge: int, calls: int) -> dict:
    """Trace ``calls`` calls of ``fn`` and sum XLA op time per (part, direction); seconds per call."""
    instr = instructions(hlo_text)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(calls):
            fn()
        jax.profiler.stop_trace()
        trace = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)[0]
        data = jax.profiler.ProfileData.from_file(trace)
    seconds, counts = defaultdict(float), defaultdict(int)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                if event.name in instr:
                    shape, op_name = instr[event.name]
                    direction = "backward" if "transpose(" in op_name else "forward"
                    key = (part_of(event.name, shape, op_name, n_edge), direction)
                    seconds[key] += event.duration_ns * 1e-9 / calls
                    counts[key] += 1
    total = sum(seconds.values())
    rows = [{"part": p, "pass": d, "op_s_per_call": s, "share": s / total, "ops_per_call": counts[(p, d)] / calls}
            for (p, d), s in sorted(seconds.items(), key=lambda kv: -kv[1])]
    return {"op_s_per_call": total, "rows": rows}


def timed(fn, calls: int) -> dict:
    """Median wall and process-CPU seconds of ``fn()`` over ``calls`` calls (after one warm-up)."""
    fn()
    wall, cpu = [], []
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def calculator_breakdown(model, atoms, calls: int) -> tuple[dict, dict]:
    """Host pieces and jitted variants of one calculator call (see the module docstring)."""
    atoms = atoms.copy()
    calc = MfjaxCalculator(model, FIDELITY)
    atoms.calc = calc
    atoms.get_forces()
    atoms.get_stress()
    cutoff, dtype = model.cutoff, np.float32
    pos, cell, pbc = np.asarray(atoms.positions), np.asarray(atoms.cell.array), np.asarray(atoms.pbc)
    nl = neighbor_list(pos, cell, pbc, cutoff)
    n_node, n_edge = calc.capacity

    def graph():
        return single_graph(pos.astype(dtype), atoms.numbers, nl.senders, nl.receivers,
                            shifts=nl.shifts.astype(dtype), cell=cell.astype(dtype), pbc=pbc,
                            n_node=n_node, n_edge=n_edge)

    device_graph = jax.device_put(graph())
    sign = {"s": 1.0}

    def nudge():
        atoms.positions += sign["s"] * 1e-3
        sign["s"] = -sign["s"]

    def calculate(*names):
        def call():
            nudge()
            calc.calculate(atoms, list(names), ["positions"])
        return call

    jitted = {
        "energy (forward only)": jax.jit(lambda v, g: graph_energies(model.apply_fn, v, g, edge_vectors(g))),
        "E+F": jax.jit(lambda v, g: predict(model.apply_fn, v, g, compute_stress=False)),
        "E+F+S": jax.jit(lambda v, g: predict(model.apply_fn, v, g, compute_stress=True)),
    }
    pieces = {
        "neighbour list (vesin, host)": timed(lambda: neighbor_list(pos, cell, pbc, cutoff), calls),
        "padded graph (single_graph, host)": timed(graph, calls),
        "graph to device (device_put)": timed(lambda: jax.block_until_ready(jax.device_put(graph())), calls),
        "calculate E+F+S (whole)": timed(calculate("energy", "forces", "stress"), calls),
        "calculate forces only (whole)": timed(calculate("forces"), calls),
    }
    for name, fn in jitted.items():
        pieces[f"jitted {name}, device graph"] = timed(
            lambda fn=fn: jax.block_until_ready(fn(calc._variables, device_graph)), calls)
    hlo = jitted["E+F+S"].lower(calc._variables, device_graph).compile().as_text()
    profile = op_profile(lambda: jax.block_until_ready(jitted["E+F+S"](calc._variables, device_graph)),
                         hlo, n_edge, calls)
    profile.update(n_atoms=len(atoms), n_edges=len(nl.senders), n_edge_padded=n_edge, compile_count=calc.compile_count)
    return pieces, profile


def md_breakdown(model, atoms, steps: int, calls: int) -> dict:
    """Op profile of one jax-md NVT episode of ``steps`` steps (as ``run.py``'s md section)."""
    case = jaxmd_case(model, atoms, steps)
    state, nbr = case.carry()
    hlo = case.episode.lower(state, nbr).compile().as_text()
    n_edge = int(nbr.idx.shape[1])
    profile = op_profile(lambda: jax.block_until_ready(case.episode(*case.carry())), hlo, n_edge, calls)
    t = timed(lambda: jax.block_until_ready(case.episode(*case.carry())), calls)
    profile.update(steps_per_episode=steps, n_edge_slots=n_edge, wall_s_per_step=t["wall_s"] / steps,
                   cpu_s_per_step=t["cpu_s"] / steps)
    return profile


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--md-steps", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model = build_model("sevennet-0")
    atoms = diamond_si(args.atoms)
    load = os.getloadavg()
    pieces, efs = calculator_breakdown(model, atoms, args.calls)
    md = md_breakdown(model, atoms, args.md_steps, max(2, args.calls // 4))
    out = {"atoms": args.atoms, "load_average_start": load, "load_average_end": os.getloadavg(),
           "calculator_pieces": pieces, "efs_op_profile": efs, "md_op_profile": md}
    print(f"load average {load[0]:.2f} -> {out['load_average_end'][0]:.2f} (2 cores)")
    print(f"\n{args.atoms} atoms: host pieces and jitted variants (median of {args.calls})")
    for name, t in pieces.items():
        print(f"  {name:48s} {1e3 * t['wall_s']:8.1f} ms wall {1e3 * t['cpu_s']:8.1f} ms CPU")
    for title, prof in (("E+F+S jitted", efs), (f"jax-md episode of {args.md_steps} steps", md)):
        print(f"\n{title}: XLA op time {1e3 * prof['op_s_per_call']:.1f} ms per call (both threads)")
        for row in prof["rows"]:
            print(f"  {row['share']:6.1%} {1e3 * row['op_s_per_call']:8.1f} ms {row['ops_per_call']:7.0f} ops  "
                  f"{row['pass']:8s} {row['part']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
