"""The benchmark's printed table and its headline figures (ratios and issue targets).

``table(results)`` renders the markdown table printed by ``benchmarks/run.py``; ``headline(results)``
returns the JSON keys the issues ask for (``ratio_inference``, ``ratio_training``, ``ratio_md``, the
FLOP fraction, the batched-inference ratios) and, under ``targets``, whether each target of issue 16
is met (``None`` where a figure was not measured, e.g. without sevenn).
"""

from __future__ import annotations

from benchmarks import common

#: Issue 16's targets (mfjax/sevenn, same run): E+F+S through the ASE calculators at every size,
#: jax-md MD and ASE-calculator MD against SevenNet through ASE, training both presets.
TARGETS = {
    "ratio_inference_ase": 3.0,  # at each of 64, 216, 512 atoms
    "ratio_md": 5.0,
    "ratio_md_ase": 3.0,
    "ratio_training": 4.0,  # sevennet-0
    "ratio_training_small": 4.0,
}


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
        fl = inf.get("flops")
        if fl:
            lines.append(
                f"| E+F+S {fl['atoms']} atoms, jitted: achieved GFLOP/s, peak GFLOP/s (float32 {fl['peak']['n']}^3 matmul), "
                f"fraction | {fl['achieved_gflops']:.1f}, {fl['peak']['gflops']:.1f}, {fl['fraction_of_peak']:.3f} | - | - |")
            split = fl.get("split")
            if split:
                lines.append(f"| E+F+S {fl['atoms']} atoms: GFLOP per call (XLA cost analysis; in dot ops) | "
                             f"{fl['flops'] / 1e9:.1f} ({split['dot_flops'] / 1e9:.1f}) | - | - |")
    bt = results.get("batched")
    if bt:
        for name, r in bt["sets"].items():
            label = f"{r['structures']} x {r['atoms_per_structure']}-atom {r['what']}, batch {bt['batch_size']}"
            row(f"many small: {label} (structures/s)", r["mfjax_structures_per_s"], r.get("sevenn_structures_per_s"), r.get("ratio"), ".1f")
            row(f"many small: {r['what']}: mfjax compile s / compilations (buckets) / padded edges per real edge / "
                f"host graph s per pass",
                f"{r['mfjax_compile_s']:.1f} / {r['mfjax_compilations']} ({r['mfjax_buckets']}) / "
                f"{r['padded_edges'] / max(r['real_edges'], 1):.2f} / {r['mfjax_host_graph_s']:.2f}", "-", None)
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


def _met(value, target):
    return {"value": value, "target": target, "met": (value >= target) if value is not None else None}


def headline(results: dict) -> dict:
    """The keys the issues ask for: ratio_inference (first size, ASE calculators), ratio_training
    (sevennet-0), ratio_md (jax-md vs sevenn through ASE), the FLOP fraction, batched-inference
    ratios, and under ``targets`` whether each of issue 16's targets is met."""
    out = {"ratio_inference": None, "ratio_training": None, "ratio_md": None}
    targets = {}
    sizes = results.get("inference", {}).get("sizes", {})
    first = str(results.get("settings", {}).get("inference_sizes", [64])[0])
    if first in sizes:
        inf = sizes[first]
        out["ratio_inference"] = inf.get("ratio_ase")
        out["ratio_inference_cpu_time"] = inf.get("ratio_ase_cpu_time")
        out["ratio_inference_jit"] = inf.get("ratio_jit")
    out["ratio_inference_ase_by_size"] = {n: r.get("ratio_ase") for n, r in sizes.items()}
    for n, r in sizes.items():
        targets[f"ratio_inference_ase_{n}"] = _met(r.get("ratio_ase"), TARGETS["ratio_inference_ase"])
    fl = results.get("inference", {}).get("flops")
    if fl:
        out["flops_fraction_of_peak"] = fl["fraction_of_peak"]
        out["flops_achieved_gflops"] = fl["achieved_gflops"]
        out["flops_peak_gflops"] = fl["peak"]["gflops"]
    tr = results.get("training", {}).get("presets", {})
    if "sevennet-0" in tr:
        out["ratio_training"] = tr["sevennet-0"].get("ratio")
        out["ratio_training_cpu_time"] = tr["sevennet-0"].get("ratio_cpu_time")
        targets["ratio_training"] = _met(out["ratio_training"], TARGETS["ratio_training"])
    if "small" in tr:
        out["ratio_training_small"] = tr["small"].get("ratio")
        targets["ratio_training_small"] = _met(out["ratio_training_small"], TARGETS["ratio_training_small"])
    if results.get("md"):
        out["ratio_md"] = results["md"].get("ratio_jaxmd_vs_sevenn_ase")
        out["ratio_md_ase"] = results["md"].get("ratio_ase_vs_sevenn_ase")
        out["ratio_md_cpu_time"] = results["md"].get("ratio_jaxmd_cpu_time")
        targets["ratio_md"] = _met(out["ratio_md"], TARGETS["ratio_md"])
        targets["ratio_md_ase"] = _met(out["ratio_md_ase"], TARGETS["ratio_md_ase"])
    for name, r in results.get("batched", {}).get("sets", {}).items():
        out[f"ratio_batched_{name}"] = r.get("ratio")
        targets[f"one_compilation_per_bucket_{name}"] = {"met": r["mfjax_compilations"] == r["mfjax_buckets"]}
    tr_compiles = [r.get("mfjax_compilations") for r in tr.values()]
    targets["one_compilation_per_training_run"] = {"met": all(c == 1 for c in tr_compiles) if tr_compiles else None}
    rows = results.get("scaling", {}).get("rows", [])
    if len(rows) >= 2:
        per_atom = [r.get("xla_temp_kb_per_atom") for r in rows]
        if all(p is not None for p in per_atom):
            spread = max(per_atom) / min(per_atom)
            targets["memory_per_atom_flat"] = {
                "sizes": [r["atoms"] for r in rows], "xla_temp_kb_per_atom_max_over_min": spread, "met": spread < 1.25,
            }
    out["targets"] = targets
    return out


def verdicts(summary: dict) -> list[str]:
    """One printed line per ratio target: value, target, met / NOT met / n/a."""
    lines = []
    for key, t in summary["targets"].items():
        if "target" not in t:
            continue
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"{key}: {_fmt(t['value'], '.2f')} (target >= {t['target']}: {verdict})")
    return lines
