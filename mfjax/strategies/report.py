"""Results of an ablation: ``results.csv`` rows, the markdown tables (mean ± std over seeds, then
the paired differences with their bootstrap intervals) and the learning-curve plot (HF test error vs
number of HF training structures, one line per strategy, interval bands; one row of panels per HF
test region)."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["COLUMNS", "SETS", "region_prefix", "region_title", "columns", "metric_columns", "write_csv", "read_csv",
           "markdown", "paired_markdown", "plot"]

#: Test sets of an ablation without named regions (prefix of their columns); named HF test
#: regions add ``hf_<region>_*`` columns (``region_prefix``).
SETS = ("hf_test", "hf_uncovered", "lf_test")
METRICS = ("energy_mae_mev_atom", "energy_rmse_mev_atom", "forces_mae_ev_a", "forces_rmse_ev_a", "stress_mae_gpa")
KEY_COLUMNS = ("strategy", "hf_fraction", "seed")
RUN_COLUMNS = ("n_hf_train", "n_lf_train", "steps", "train_seconds", "budget_steps", "hf_seen", "best_step",
               "best_valid", "final_valid", "stopped_early", "compile_seconds")
COLUMNS = KEY_COLUMNS + RUN_COLUMNS + tuple(f"{s}_{m}" for s in SETS for m in ("n_structures",) + METRICS) + ("notes",)


def region_prefix(region: str) -> str:
    """Column prefix of an HF test region: "test" (the covered HF test split) -> hf_test, else hf_<region>."""
    return "hf_test" if region == "test" else f"hf_{region}"


def region_title(region: str) -> str:
    return "HF test (covered region)" if region == "test" else f"HF test, region {region} (no HF training data there)"


def columns(rows: Sequence[Mapping]) -> list[str]:
    """CSV header: keys, run columns, then every other key of the rows in first-seen order, notes last."""
    out = list(KEY_COLUMNS + RUN_COLUMNS)
    for row in rows:
        out += [k for k in row if k not in out and k != "notes"]
    return out + ["notes"]


def metric_columns(prefix: str, metrics: Mapping[str, float | int | None] | None) -> dict[str, float | int | None]:
    """``{prefix_metric: value}`` for one fidelity's metrics (None -> empty)."""
    metrics = metrics or {}
    return {f"{prefix}_{m}": metrics.get(m) for m in ("n_structures",) + METRICS}


def write_csv(path: str | Path, rows: Sequence[Mapping]) -> None:
    """All rows, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        header = columns(rows)
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in header})
    os.replace(tmp, path)


def _parse(value: str):
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: (v if k in ("strategy", "notes") else _parse(v)) for k, v in row.items()} for row in csv.DictReader(handle)]


def _group(rows: Iterable[Mapping], column: str) -> dict[str, dict[float, list[float]]]:
    """{strategy: {hf_fraction: [values over seeds]}} of the finite values of ``column``."""
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get(column)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[row["strategy"]][float(row["hf_fraction"])].append(float(value))
    return out


def _n_hf(rows: Sequence[Mapping]) -> dict[float, int]:
    return {float(r["hf_fraction"]): int(r["n_hf_train"]) for r in rows}


def _cell(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "–"
    v = np.asarray(values) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def tables(regions: Sequence[str]) -> list[tuple[str, str, float, int]]:
    """(title, column, scale, digits) of the mean ± std tables: force and energy MAE per HF test
    region, LF test force MAE, training time."""
    out = []
    for region in regions:
        p, title = region_prefix(region), region_title(region)
        out += [(f"{title}: force MAE, meV/Å", f"{p}_forces_mae_ev_a", 1000.0, 1),
                (f"{title}: energy MAE, meV/atom", f"{p}_energy_mae_mev_atom", 1.0, 2)]
    return out + [
        ("LF test (models that also predict the low fidelity): force MAE, meV/Å", "lf_test_forces_mae_ev_a", 1000.0, 1),
        ("Training time per run (s; without compilation and without the shared LF pre-training, listed as lf_model)",
         "train_seconds", 1.0, 0),
    ]


def markdown(rows: Sequence[Mapping], order: Sequence[str], regions: Sequence[str] = ("test", "uncovered"),
             paired: Sequence[Mapping] = ()) -> str:
    """Markdown tables (one per metric and region): rows = strategies, columns = number of HF training
    structures (fraction); cells = mean ± sample std over seeds (just the value for one seed); then
    the paired differences (``paired_markdown``) when given. A metric without values (forces of
    energy-only data) has no table."""
    n_hf = _n_hf([r for r in rows if r["strategy"] != "lf_model"])
    fractions = sorted(n_hf)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); cells are mean ± std over seeds."]
    budgets = sorted({int(r["budget_steps"]) for r in rows if isinstance(r.get("budget_steps"), (int, float))})
    if budgets:  # the equal-budget rule of settings.Budget
        lines.append(f"Budget: every strategy gets the same total number of optimiser steps "
                     f"({', '.join(map(str, budgets))}), the LF pre-training of transfer, delta and append included; "
                     f"with train.patience each stage stops early on its validation metric; with train.keep: last "
                     f"every model is the final weights of its budget. Steps done, HF structures seen, best step, "
                     f"final validation value and compile time per run are in results.csv.")
    for title, column, scale, digits in tables(regions):
        groups = _group(rows, column)
        if not groups:
            continue
        lines += ["", f"**{title}**", "",
                  "| strategy | " + " | ".join(f"{n_hf[f]} HF ({f:g})" for f in fractions) + " |",
                  "|---|" + "---:|" * len(fractions)]
        for name in list(order) + ["lf_model"]:
            if name not in groups:
                continue
            if name == "lf_model":  # no HF data: one value, repeated for reference
                values = [v for vs in groups[name].values() for v in vs]
                cells = [_cell(values, scale, digits)] + [""] * (len(fractions) - 1)
                name = "lf_model (LF model, no HF data)"
            else:
                cells = [_cell(groups[name].get(f, []), scale, digits) for f in fractions]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if paired:
        lines += ["", paired_markdown(paired, regions)]
    return "\n".join(lines) + "\n"


def _diff_cell(c: Mapping | None, digits: int) -> tuple[str, str]:
    if c is None:
        return "–", "–"
    return f"{c['difference']:+.{digits}f} [{c['ci_low']:+.{digits}f}, {c['ci_high']:+.{digits}f}]", c["verdict"]


def paired_markdown(paired: Sequence[Mapping], regions: Sequence[str]) -> str:
    """"Paired differences": per HF test region a table with one row per (fraction, comparison):
    mean difference a - b (negative = a has the lower error) with its 95 % interval and the verdict,
    for force and energy MAE."""
    lines = ["## Paired differences", "",
             "a − b of the test MAE on the same seeds and test structures (negative: a has the lower error); "
             "[95 % interval] from a hierarchical bootstrap over seeds and test structures "
             "(mfjax.strategies.stats). A verdict names a winner only where the interval excludes zero, else "
             "\"tie\". \"best single-fidelity\" is the hf_only / transfer / delta run with the lowest mean force MAE "
             "there (energy MAE without forces; chosen on the same test data)."]
    for region in regions:
        mine = [c for c in paired if c["region"] == region]
        if not mine:
            continue
        lines += ["", f"**{region_title(region)}**", "",
                  "| HF structures (fraction) | a − b | Δ force MAE, meV/Å [95 % CI] | verdict | "
                  "Δ energy MAE, meV/atom [95 % CI] | verdict | seeds × structures |",
                  "|---|---|---:|---|---:|---|---:|"]
        keys = list(dict.fromkeys((c["hf_fraction"], c["a"], c["b_label"]) for c in mine))
        for fraction, a, label in keys:
            by_metric = {c["metric"]: c for c in mine if (c["hf_fraction"], c["a"], c["b_label"]) == (fraction, a, label)}
            force, f_verdict = _diff_cell(by_metric.get("forces_mae"), 1)
            energy, e_verdict = _diff_cell(by_metric.get("energy_mae"), 2)
            size = next(iter(by_metric.values()))
            n = size["n_hf_train"]
            lines.append(f"| {'' if n is None else n} ({fraction:g}) | {a} − {label} | {force} | {f_verdict} | {energy} | "
                         f"{e_verdict} | {size['n_seeds']} × {size['n_structures']} |")
    return "\n".join(lines)


def plot(rows: Sequence[Mapping], order: Sequence[str], path: str | Path, title: str = "",
         regions: Sequence[str] = ("test", "uncovered"), bands: Mapping | None = None) -> Path:
    """Learning curves: per HF test region (one row of panels) force and energy MAE vs number of HF
    training structures, one line per strategy: the mean over seeds with a band = its 95 % interval
    (``bands[(region, metric)][strategy][fraction]``: ``stats.Interval``; metric forces_mae /
    energy_mae) where given, else ± std over seeds (cut at mean / 5 on the log axis). Panels without
    values are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

    bands = bands or {}
    n_hf = _n_hf([r for r in rows if r["strategy"] != "lf_model"])
    panels = []
    for region in regions:
        p = region_prefix(region)
        name = "HF test" if region == "test" else region
        for metric, column, label, scale in (
                ("forces_mae", f"{p}_forces_mae_ev_a", f"{name}: force MAE (meV/Å)", 1000.0),
                ("energy_mae", f"{p}_energy_mae_mev_atom", f"{name}: energy MAE (meV/atom)", 1.0)):
            if _group([r for r in rows if r["strategy"] != "lf_model"], column):
                panels.append((region, metric, column, label, scale))
    n_rows = max(1, math.ceil(len(panels) / 2))
    fig, axes = plt.subplots(n_rows, 2, figsize=(10, 4 * n_rows), squeeze=False)
    for ax, (region, metric, column, label, scale) in zip(axes.flat, panels):
        groups = _group(rows, column)
        band = bands.get((region, metric), {})
        for name in order:
            if name not in groups:
                continue
            fr = sorted(groups[name])
            x = [n_hf[f] for f in fr]
            values = [np.asarray(groups[name][f]) * scale for f in fr]
            mean = np.array([v.mean() for v in values])
            if name in band and all(f in band[name] for f in fr):
                low = np.array([band[name][f].low for f in fr])
                high = np.array([band[name][f].high for f in fr])
            else:
                std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
                low, high = mean - std, mean + std
            low = np.minimum(np.maximum(low, 0.2 * mean), mean)  # log axis: a band reaching 0 is cut at mean / 5
            bar = ax.errorbar(x, mean, yerr=[mean - low, np.maximum(high, mean) - mean], marker="o", capsize=3, label=name)
            ax.fill_between(x, low, high, color=bar.lines[0].get_color(), alpha=0.2, linewidth=0)
        if "forces" in column and "lf_model" in groups:
            ref = np.mean([v for vs in groups["lf_model"].values() for v in vs]) * scale
            ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="LF model (no HF data)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(set(n_hf.values())))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        bottom, top = ax.get_ylim()  # minor tick labels only within one decade (else they overlap)
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if top < 10 * bottom else NullFormatter())
        ax.set_xlabel("HF training structures")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(((title + ": ") if title else "") + "mean over seeds, bands = 95 % intervals (seeds × test structures)",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
