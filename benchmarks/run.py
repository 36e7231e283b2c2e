"""mfjax vs SevenNet (PyTorch) on the same machine, in the same run: a side-by-side table + JSON.

    python benchmarks/run.py [--quick] [--json OUT.json] [--no-sevenn] [--only inference,training,md,scaling]

Sections (details in benchmarks/README.md):
  inference  E+F+S of diamond Si (64/216/512 atoms), preset sevennet-0, through each code's ASE
             calculator (mfjax also without ASE: the jitted function alone), atom-steps/s;
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

from benchmarks import common  # noqa: E402

PROFILES = {
    # tests/test_benchmarks_smoke.py: the harness end to end on tiny inputs (small model, 8 atoms)
    "smoke": {
        "model_preset": "small",
        "inference_sizes": [8],
        "inference_rounds": {8: 2},
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
SECTIONS = ("inference", "training", "md", "scaling")
TARGETS = {"ratio_inference": 3.0, "ratio_training": 3.0, "ratio_md": 5.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {common.load_average()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# sevenn thread count
# ---------------------------------------------------------------------------------------------
def choose_torch_threads(call, setting: str) -> dict:
    """torch intra-op threads for sevenn: a fixed number, or 'auto' = the faster of 1 and 2.

    On a shared 2-core machine torch's OpenMP pool collapses when another process holds a core
    (10x slower seen here), while 1 thread degrades gracefully; 'auto' gives sevenn its best.
    """
    import torch

    if setting != "auto":
        torch.set_num_threads(int(setting))
        return {"torch_threads": int(setting), "probe": None}
    probe = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        call()
        probe[threads] = common.interleave({"c": call}, 2)["c"].median
    best = min(probe, key=probe.get)
    torch.set_num_threads(best)
    return {"torch_threads": best, "probe_s_per_call": probe}


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
                out["torch"] = choose_torch_threads(call, torch_threads)
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
    results["inference"] = out


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
    mfjax_side.ase_md_run(atoms, calc, 1)  # compile the calculator
    k_jm, k_ase = prof["md_steps_jaxmd"], prof["md_steps_ase"]
    fns = {
        "jaxmd": lambda: jm.run(k_jm),
        "mfjax_ase": lambda: mfjax_side.ase_md_run(atoms, calc, k_ase),
    }
    if sevenn_ok:
        from benchmarks import sevenn_side

        sev_calc = sevenn_side.calculator()
        mfjax_side.ase_md_run(atoms, sev_calc, 1)
        fns["sevenn_ase"] = lambda: mfjax_side.ase_md_run(atoms, sev_calc, k_ase)
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


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------
def _fmt(x, spec=".1f") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def table(results: dict) -> str:
    lines = []

    def row(name, a, b, r, spec=".1f"):
        lines.append(f"| {name} | {_fmt(a, spec)} | {_fmt(b, spec)} | {_fmt(r, '.2f')} |")

    lines.append("| figure | mfjax | sevenn | mfjax/sevenn |")
    lines.append("|---|---:|---:|---:|")
    inf = results.get("inference")
    if inf:
        row("params (sevennet-0 architecture)", inf["mfjax_params"], inf.get("sevenn_params"),
            common.ratio(inf["mfjax_params"], inf.get("sevenn_params")), "d")
        for n, r in inf["sizes"].items():
            sev = r.get("sevenn_ase_atom_steps_per_s")
            row(f"E+F+S {n} atoms, ASE calculator (atom-steps/s)", r["mfjax_ase_atom_steps_per_s"], sev, r.get("ratio_ase"))
            row(f"E+F+S {n} atoms, jitted fn vs sevenn ASE (atom-steps/s)", r["mfjax_jit_atom_steps_per_s"], sev, r.get("ratio_jit"))
            if r.get("ratio_ase_cpu_time") is not None:
                row(f"E+F+S {n} atoms, ASE calculator: CPU s per call", r["mfjax_ase"]["cpu_median_s"], r["sevenn_ase"]["cpu_median_s"],
                    r["ratio_ase_cpu_time"], ".3f")
    tr = results.get("training")
    if tr:
        for preset, r in tr["presets"].items():
            row(f"training {preset}, batch {tr['batch_structures']} x {tr['atoms_per_structure']} atoms (structures/s)",
                r["mfjax_structures_per_s"], r.get("sevenn_structures_per_s"), r.get("ratio"), ".2f")
            if r.get("ratio_cpu_time") is not None:
                row(f"training {preset}: CPU s per epoch (ratio = sevenn/mfjax)", r["mfjax"]["cpu_median_s"], r["sevenn"]["cpu_median_s"],
                    r["ratio_cpu_time"], ".2f")
            row(f"training {preset}: params", r["mfjax_params"], r.get("sevenn_params"),
                common.ratio(r["mfjax_params"], r.get("sevenn_params")), "d")
            row(f"training {preset}: compile s / compilations", f"{r['mfjax_compile_s']:.1f} / {r['mfjax_compilations']}", "-", None)
    md = results.get("md")
    if md:
        sev = md.get("sevenn_ase", {}).get("steps_per_s")
        row(f"MD {md['atoms']} atoms NVT: jax-md vs sevenn ASE (steps/s)", md["jaxmd"]["steps_per_s"], sev, md.get("ratio_jaxmd_vs_sevenn_ase"), ".2f")
        row(f"MD {md['atoms']} atoms NVT: ASE + MfjaxCalculator vs sevenn ASE (steps/s)", md["mfjax_ase"]["steps_per_s"], sev, md.get("ratio_ase_vs_sevenn_ase"), ".2f")
        if md.get("ratio_jaxmd_cpu_time") is not None:
            row("MD: CPU s per step, jax-md vs sevenn ASE (ratio = sevenn/mfjax)", md["jaxmd"]["cpu_s_per_step"],
                md["sevenn_ase"]["cpu_s_per_step"], md["ratio_jaxmd_cpu_time"], ".3f")
    sc = results.get("scaling")
    if sc and sc["rows"]:
        lines.append("")
        lines.append("| atoms | edges | compile s | compilations | E+F+S s | atom-steps/s | peak RSS MiB | (peak-base) KiB/atom | XLA temp KiB/atom |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sc["rows"]:
            lines.append(
                f"| {r['atoms']} | {r['edges']} | {r['compile_s']:.1f} | {r['compilations']} | {_fmt(r['call_s'], '.2f')} | "
                f"{_fmt(r['atom_steps_per_s'])} | {r['peak_rss_mb']:.0f} | {r['peak_minus_base_kb_per_atom']:.0f} | "
                f"{_fmt(r.get('xla_temp_kb_per_atom'), '.0f')} |"
            )
        for n, why in sc["skipped"].items():
            lines.append(f"| {n} | skipped: {why} |")
    return "\n".join(lines)


def headline(results: dict) -> dict:
    """The keys the issue asks for: ratio_inference (64 atoms, ASE calculators), ratio_training
    (sevennet-0), ratio_md (jax-md vs sevenn through ASE), and whether each target is met."""
    out = {"ratio_inference": None, "ratio_training": None, "ratio_md": None}
    inf = results.get("inference", {}).get("sizes", {}).get(str(results.get("settings", {}).get("inference_sizes", [64])[0]))
    if inf:
        out["ratio_inference"] = inf.get("ratio_ase")
        out["ratio_inference_cpu_time"] = inf.get("ratio_ase_cpu_time")
        out["ratio_inference_jit"] = inf.get("ratio_jit")
    tr = results.get("training", {}).get("presets", {})
    if "sevennet-0" in tr:
        out["ratio_training"] = tr["sevennet-0"].get("ratio")
        out["ratio_training_cpu_time"] = tr["sevennet-0"].get("ratio_cpu_time")
    if "small" in tr:
        out["ratio_training_small"] = tr["small"].get("ratio")
    if results.get("md"):
        out["ratio_md"] = results["md"].get("ratio_jaxmd_vs_sevenn_ase")
        out["ratio_md_ase"] = results["md"].get("ratio_ase_vs_sevenn_ase")
        out["ratio_md_cpu_time"] = results["md"].get("ratio_jaxmd_cpu_time")
    out["targets"] = {k: {"target": v, "met": (out[k] >= v) if out[k] is not None else None} for k, v in TARGETS.items()}
    tr_compiles = [r.get("mfjax_compilations") for r in tr.values()]
    out["targets"]["one_compilation_per_training_run"] = {"met": all(c == 1 for c in tr_compiles) if tr_compiles else None}
    rows = results.get("scaling", {}).get("rows", [])
    if len(rows) >= 2:
        per_atom = [r.get("xla_temp_kb_per_atom") for r in rows]
        if all(p is not None for p in per_atom):
            spread = max(per_atom) / min(per_atom)
            out["targets"]["memory_per_atom_flat"] = {
                "sizes": [r["atoms"] for r in rows], "xla_temp_kb_per_atom_max_over_min": spread, "met": spread < 1.25,
            }
    return out


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
            args.json.write_text(json.dumps({**results, **headline(results)}, indent=2, default=str))

    runners = {
        "inference": lambda: run_inference(prof, sevenn_ok, results, args.torch_threads),
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
    summary = headline(results)
    results.update(summary)

    print(table(results))
    print()
    for key in ("ratio_inference", "ratio_training", "ratio_md"):
        target = TARGETS[key]
        value = summary[key]
        verdict = "n/a" if value is None else ("met" if value >= target else "NOT met")
        print(f"{key}: {_fmt(value, '.2f')} (target >= {target}: {verdict})")
    print(f"wall time {results['wall_s']:.0f} s; load average {results['machine']['load_average_at_start'][0]:.1f} -> "
          f"{results['load_average_at_end'][0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
