"""mfjax vs SevenNet (PyTorch) on the same machine, in the same run: a side-by-side table + JSON.

    python benchmarks/run.py [--quick] [--json OUT.json] [--no-sevenn] [--only inference,batched,training,md,scaling]

Sections (details in benchmarks/README.md):
  inference  E+F+S of diamond Si (64/216/512 atoms), preset sevennet-0, through each code's ASE
             calculator (mfjax also without ASE: the jitted function alone), atom-steps/s; at 512
             atoms the FLOPs of the jitted call (XLA cost analysis) over its time, as a fraction of
             a float32 matmul's GFLOP/s measured in the same run;
  batched    structures/s for many small structures (9-atom ethanol molecules, 8-atom Si cells)
             through Model.predict(list, batch_size) against SevenNet's batched inference;
  training   structures/s on 64-atom Si batches, presets sevennet-0 and small (sevenn: its Trainer
             on the same frames and architecture), compile time and number of compilations;
  md         NVT steps/s on 64-atom Si: jax-md (lax.fori_loop episodes) and ASE Langevin with the
             mfjax calculator, against ASE Langevin with SevenNet's calculator;
  scaling    compile time, compilations, peak RSS and XLA buffer sizes per atom from 64 to 4096
             atoms, each size in its own subprocess (mfjax only).
The codes are timed alternately (ABBA) so that the load of other users of the machine falls on both;
ratios are of medians. sevenn/torch are optional (``pip install -e '.[bench]'``): without them the
sevenn columns are skipped and the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common, report  # noqa: E402
from benchmarks.common import log  # noqa: E402

PROFILES = {
    # tests/test_benchmarks_smoke.py: the harness end to end on tiny inputs (small model, 8 atoms)
    "smoke": {
        "model_preset": "small",
        "inference_sizes": [8],
        "inference_rounds": {8: 2},
        "flops_atoms": 8,
        "matmul_n": 256,
        "batched_structures": 4,
        "batched_size": 2,
        "batched_rounds": 1,
        "batched_kinds": ["molecules"],  # one compilation: the smoke test stays fast
        "train_presets": ["small"],
        "train_structures": {"small": 4},
        "train_atoms": 8,
        "train_batch": 2,
        "train_epochs": 1,
        "md_steps_jaxmd": 4,
        "md_episode": 2,
        "md_steps_ase": 2,
        "md_rounds": 1,
        "scaling_sizes": [8],
    },
    "quick": {
        "model_preset": "sevennet-0",
        "train_atoms": 64,
        "inference_sizes": [64, 216, 512],
        "inference_rounds": {64: 4, 216: 2, 512: 2},
        "flops_atoms": 512,
        "matmul_n": 2048,
        "batched_structures": 200,
        "batched_size": 25,  # divides 200 and 1000: every batch in one bucket (one compilation per set)
        "batched_rounds": 2,
        "train_presets": ["sevennet-0", "small"],
        "train_structures": {"sevennet-0": 8, "small": 16},
        "train_batch": 4,
        "train_epochs": 2,
        "md_steps_jaxmd": 20,
        "md_episode": 10,
        "md_steps_ase": 5,
        "md_rounds": 2,
        "scaling_sizes": [64, 512],
    },
    "full": {
        "model_preset": "sevennet-0",
        "train_atoms": 64,
        "inference_sizes": [64, 216, 512],
        "inference_rounds": {64: 7, 216: 4, 512: 3},
        "flops_atoms": 512,
        "matmul_n": 2048,
        "batched_structures": 1000,
        "batched_size": 25,  # divides 200 and 1000: every batch in one bucket (one compilation per set)
        "batched_rounds": 3,
        "train_presets": ["sevennet-0", "small"],
        "train_structures": {"sevennet-0": 16, "small": 32},
        "train_batch": 4,
        "train_epochs": 3,
        "md_steps_jaxmd": 100,
        "md_episode": 50,
        "md_steps_ase": 20,
        "md_rounds": 2,
        "scaling_sizes": [64, 216, 512, 1728, 4096],
    },
}
SECTIONS = ("inference", "batched", "training", "md", "scaling")


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def run_inference(prof: dict, sevenn_ok: bool, results: dict, torch_threads: str) -> None:
    from benchmarks import mfjax_side

    model = mfjax_side.build_model(prof["model_preset"])
    out = {"preset": prof["model_preset"], "mfjax_params": mfjax_side.count_params(model), "sizes": {}}
    sev_calc = None
    if sevenn_ok:
        from benchmarks import sevenn_side

        sev_calc = sevenn_side.calculator()
        out["sevenn_params"] = sevenn_side.count_params(sev_calc.model)
    for n in prof["inference_sizes"]:
        atoms = common.diamond_si(n)
        log(f"inference {n} atoms: compiling mfjax")
        case = mfjax_side.inference_case(model, atoms)
        fns = {"mfjax_ase": case.ase_call, "mfjax_jit": case.jit_call}
        row = {"atoms": n, "edges": case.n_edges, "mfjax_compile_s": case.compile_s}
        if sev_calc is not None:
            call, sev_atoms = sevenn_side.ase_caller(atoms, sev_calc)
            if "torch" not in out:
                out["torch"] = sevenn_side.choose_torch_threads(call, torch_threads)
                log(f"sevenn torch threads: {out['torch']}")
            fns["sevenn_ase"] = call
        log(f"inference {n} atoms: timing {list(fns)} x {prof['inference_rounds'][n]}")
        timings = common.interleave(fns, prof["inference_rounds"][n])
        for name, t in timings.items():
            row[name] = t.as_dict()
            row[f"{name}_atom_steps_per_s"] = n / t.median
        row["mfjax_calculator_compilations"] = case.calculator.compile_count
        if sev_calc is not None:
            row["sevenn_edges"] = sevenn_side.num_edges(sev_calc)
            row["ratio_ase"] = common.ratio(row["mfjax_ase_atom_steps_per_s"], row["sevenn_ase_atom_steps_per_s"])
            row["ratio_jit"] = common.ratio(row["mfjax_jit_atom_steps_per_s"], row["sevenn_ase_atom_steps_per_s"])
            row["ratio_ase_cpu_time"] = common.ratio(timings["sevenn_ase"].cpu_median, timings["mfjax_ase"].cpu_median)
        out["sizes"][str(n)] = row
        if n == prof["flops_atoms"]:
            out["flops"] = flops_row(case, model, n, timings["mfjax_jit"].median, prof["matmul_n"])
            log(f"inference {n} atoms: {out['flops']['achieved_gflops']:.1f} GFLOP/s achieved, "
                f"peak {out['flops']['peak']['gflops']:.1f} GFLOP/s")
    results["inference"] = out


def flops_row(case, model, n_atoms: int, seconds: float, matmul_n: int) -> dict:
    """XLA's FLOPs of the jitted E+F+S call the inference rows time, over its median seconds, as a
    fraction of a float32 matmul's GFLOP/s measured now."""
    from benchmarks import flops

    args = (model.variables, case.graph, True)
    total = flops.cost_analysis_flops(case.calculator._run, *args)
    dot = flops.dot_flops(case.calculator._run, *args, static_argnums=2)
    return {"atoms": n_atoms, **flops.flop_fraction(total, seconds, flops.matmul_peak(matmul_n), dot)}


def run_batched(prof: dict, sevenn_ok: bool, results: dict, torch_threads: str) -> None:
    """structures/s for many small structures through ``Model.predict(list, batch_size)`` against
    SevenNet's batched inference (``sevenn inference``'s loop), same structures, same batch size."""
    from benchmarks import mfjax_side

    model = mfjax_side.build_model(prof["model_preset"])
    n, batch = prof["batched_structures"], prof["batched_size"]
    out = {"preset": prof["model_preset"], "batch_size": batch, "sets": {}}
    sev_model = None
    if sevenn_ok:
        from benchmarks import sevenn_side

        sev_model = sevenn_side.batched_model()
    for kind in prof.get("batched_kinds", ("molecules", "cells")):
        frames = common.small_structures(kind, n)
        log(f"batched {kind}: {n} structures, compiling mfjax")
        case = mfjax_side.batched_case(model, frames, batch)
        fns = {"mfjax": case.call}
        row = {"what": "ethanol molecules" if kind == "molecules" else "Si cells", "structures": n,
               "atoms_per_structure": len(frames[0]), "mfjax_first_pass_s": case.first_pass_s,
               "mfjax_buckets": case.buckets, "batches": case.n_batches, "real_edges": case.real_edges,
               "padded_edges": case.padded_edges, "mfjax_host_graph_s": case.host_graph_s}
        if sev_model is not None:
            sev_call = sevenn_side.batched_caller(sev_model, frames, batch)
            if "torch" not in out:
                torch_info = results.get("inference", {}).get("torch")
                probe = sevenn_side.batched_caller(sev_model, frames[:batch], batch)
                out["torch"] = torch_info or sevenn_side.choose_torch_threads(probe, torch_threads)
                log(f"sevenn torch threads: {out['torch']}")
            sevenn_side.batched_caller(sev_model, frames[:batch], batch)()  # warm-up
            fns["sevenn"] = sev_call
        log(f"batched {kind}: timing {list(fns)} x {prof['batched_rounds']}")
        timings = common.interleave(fns, prof["batched_rounds"])
        for name, t in timings.items():
            row[name] = t.as_dict()
            row[f"{name}_structures_per_s"] = n / t.median
        # the first pass minus a steady one: the compilations' share of it
        row["mfjax_compile_s"] = max(case.first_pass_s - timings["mfjax"].median, 0.0)
        row["mfjax_compilations"] = case.compilations()  # first pass and timed passes together
        if sev_model is not None:
            row["ratio"] = common.ratio(row["mfjax_structures_per_s"], row["sevenn_structures_per_s"])
            row["ratio_cpu_time"] = common.ratio(timings["sevenn"].cpu_median, timings["mfjax"].cpu_median)
        out["sets"][kind] = row
    results["batched"] = out


def run_training(prof: dict, sevenn_ok: bool, results: dict) -> None:
    from benchmarks import mfjax_side

    out = {"batch_structures": prof["train_batch"], "atoms_per_structure": prof["train_atoms"], "presets": {}}
    for preset in prof["train_presets"]:
        n = prof["train_structures"][preset]
        frames = common.labelled_si(n, prof["train_atoms"], seed=1)
        log(f"training {preset}: compiling mfjax step")
        case = mfjax_side.training_case(preset, frames, prof["train_batch"])
        fns = {"mfjax": case.epoch}
        row = {"structures": n, "mfjax_params": case.n_params, "mfjax_compile_s": case.compile_s}
        if sevenn_ok:
            from benchmarks import sevenn_side

            sev = sevenn_side.training_case(preset, frames, prof["train_batch"])
            row["sevenn_params"] = sev.n_params
            log(f"training {preset}: sevenn warm-up epoch")
            sev.epoch()
            fns["sevenn"] = sev.epoch
        case.epoch()  # first full epoch (host caches, allocator) outside the timing
        log(f"training {preset}: timing {list(fns)} x {prof['train_epochs']} epochs")
        timings = common.interleave(fns, prof["train_epochs"])
        for name, t in timings.items():
            row[name] = t.as_dict()
            row[f"{name}_structures_per_s"] = n / t.median
        row["mfjax_compilations"] = case.traces()
        row["mfjax_executables"] = case.cache_size()
        if sevenn_ok:
            row["ratio"] = common.ratio(row["mfjax_structures_per_s"], row["sevenn_structures_per_s"])
            row["ratio_cpu_time"] = common.ratio(timings["sevenn"].cpu_median, timings["mfjax"].cpu_median)
        out["presets"][preset] = row
    results["training"] = out


def run_md(prof: dict, sevenn_ok: bool, results: dict) -> None:
    from benchmarks import mfjax_side
    from mfjax.model.calculator import MfjaxCalculator

    model = mfjax_side.build_model(prof["model_preset"])
    n_atoms = prof["inference_sizes"][0]
    atoms = common.diamond_si(n_atoms)
    log("md: compiling jax-md episode")
    jm = mfjax_side.jaxmd_case(model, atoms, prof["md_episode"], skin=prof.get("md_skin", 0.0))
    calc = MfjaxCalculator(model, mfjax_side.FIDELITY)
    # integrators built (and the calculator compiled) outside the timing: each timed call is
    # k_ase steps = k_ase force calls of one continuing trajectory
    dyn = mfjax_side.ase_md_dynamics(atoms, calc)
    k_jm, k_ase = prof["md_steps_jaxmd"], prof["md_steps_ase"]
    fns = {
        "jaxmd": lambda: jm.run(k_jm),
        "mfjax_ase": lambda: dyn.run(k_ase),
    }
    if sevenn_ok:
        from benchmarks import sevenn_side

        sev_calc = sevenn_side.calculator()
        sev_dyn = mfjax_side.ase_md_dynamics(atoms, sev_calc)
        fns["sevenn_ase"] = lambda: sev_dyn.run(k_ase)
    log(f"md: timing {list(fns)} x {prof['md_rounds']}")
    timings = common.interleave(fns, prof["md_rounds"])
    steps = {"jaxmd": k_jm, "mfjax_ase": k_ase, "sevenn_ase": k_ase}
    out = {"atoms": n_atoms, "preset": prof["model_preset"], "ensemble": "NVT Langevin 300 K, 1 fs", "steps_per_episode": prof["md_episode"],
           "jaxmd_compile_s": jm.compile_s}
    for name, t in timings.items():
        out[name] = {"steps": steps[name], **t.as_dict(), "steps_per_s": steps[name] / t.median,
                     "cpu_s_per_step": t.cpu_median / steps[name]}
    out["jaxmd_compilations"] = jm.compile_count()
    out["mfjax_calculator_compilations"] = calc.compile_count
    if sevenn_ok:
        sev = out["sevenn_ase"]["steps_per_s"]
        out["ratio_jaxmd_vs_sevenn_ase"] = common.ratio(out["jaxmd"]["steps_per_s"], sev)
        out["ratio_ase_vs_sevenn_ase"] = common.ratio(out["mfjax_ase"]["steps_per_s"], sev)
        out["ratio_jaxmd_cpu_time"] = common.ratio(out["sevenn_ase"]["cpu_s_per_step"], out["jaxmd"]["cpu_s_per_step"])
    results["md"] = out


def _mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def run_scaling(prof: dict, results: dict) -> None:
    rows, skipped = [], {}
    per_atom_mb, fixed_mb = None, 0.0
    for n in prof["scaling_sizes"]:
        if per_atom_mb is not None:
            need = fixed_mb + 1.5 * per_atom_mb * n
            if need > 0.8 * _mem_available_mb():
                skipped[str(n)] = f"needs ~{need:.0f} MiB, {_mem_available_mb():.0f} MiB available"
                log(f"scaling {n}: skipped ({skipped[str(n)]})")
                continue
        log(f"scaling {n} atoms (subprocess)")
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.scaling", "--atoms", str(n), "--preset", prof["model_preset"]],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            skipped[str(n)] = f"worker failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"
            log(f"scaling {n}: {skipped[str(n)]}")
            continue
        row = json.loads(lines[-1])
        rows.append(row)
        # XLA's buffers scale with the atoms; the compiler's own peak (fixed) does not
        per_atom_mb = row.get("xla_temp_mb", row["peak_rss_mb"] - row["rss_base_mb"]) / n
        fixed_mb = row.get("peak_rss_after_compile_mb", row["rss_base_mb"])
    results["scaling"] = {"rows": rows, "skipped": skipped}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced run (< 10 min here)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help=argparse.SUPPRESS)  # 'smoke' for the test
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-sevenn", action="store_true", help="mfjax columns only")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--torch-threads", default="auto", help="sevenn's torch threads: auto (faster of 1, 2) or a number")
    args = parser.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    profile = args.profile or ("quick" if args.quick else "full")
    prof = PROFILES[profile]

    sevenn_ok, sevenn_why = False, "disabled with --no-sevenn"
    if not args.no_sevenn:
        from benchmarks import sevenn_side

        sevenn_ok, sevenn_why = sevenn_side.available()
    if not sevenn_ok:
        print(f"sevenn columns skipped: {sevenn_why}", flush=True)

    t_start = time.perf_counter()
    results: dict = {"machine": common.machine_info(), "profile": profile,
                     "settings": prof, "sevenn": sevenn_why if sevenn_ok else None, "sevenn_skipped": None if sevenn_ok else sevenn_why}
    results["machine"]["gpu"] = "none used: CPU-only benchmark (no GPU on this machine)"
    def checkpoint() -> None:  # partial results survive a run that is stopped half-way
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**results, **report.headline(results)}, indent=2, default=str))

    runners = {
        "inference": lambda: run_inference(prof, sevenn_ok, results, args.torch_threads),
        "batched": lambda: run_batched(prof, sevenn_ok, results, args.torch_threads),
        "training": lambda: run_training(prof, sevenn_ok, results),
        "md": lambda: run_md(prof, sevenn_ok, results),
        "scaling": lambda: run_scaling(prof, results),
    }
    for section in SECTIONS:
        if section in sections:
            runners[section]()
            checkpoint()
    results["wall_s"] = time.perf_counter() - t_start
    results["load_average_at_end"] = common.load_average()
    summary = report.headline(results)
    results.update(summary)

    print(report.table(results))
    print()
    for line in report.verdicts(summary):
        print(line)
    print(f"wall time {results['wall_s']:.0f} s; load average {results['machine']['load_average_at_start'][0]:.1f} -> "
          f"{results['load_average_at_end'][0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
