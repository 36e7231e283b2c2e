"""Results of an ablation: ``results.csv`` rows, the markdown table (mean ± std over seeds) and the
learning-curve plot (HF test error vs number of HF training structures, one line per strategy)."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["COLUMNS", "SETS", "metric_columns", "write_csv", "read_csv", "markdown", "plot"]

#: Test sets in the results (prefix of their columns).
SETS = ("hf_test", "hf_uncovered", "lf_test")
METRICS = ("energy_mae_mev_atom", "energy_rmse_mev_atom", "forces_mae_ev_a", "forces_rmse_ev_a", "stress_mae_gpa")
KEY_COLUMNS = ("strategy", "hf_fraction", "seed")
COLUMNS = KEY_COLUMNS + ("n_hf_train", "n_lf_train", "steps", "train_seconds") + tuple(
    f"{s}_{m}" for s in SETS for m in ("n_structures",) + METRICS
) + ("notes",)


def metric_columns(prefix: str, metrics: Mapping[str, float | int | None] | None) -> dict[str, float | int | None]:
    """``{prefix_metric: value}`` for one fidelity's metrics (None -> empty)."""
    metrics = metrics or {}
    return {f"{prefix}_{m}": metrics.get(m) for m in ("n_structures",) + METRICS}


def write_csv(path: str | Path, rows: Sequence[Mapping]) -> None:
    """All rows, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
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


TABLES = (
    ("HF test (covered region): force MAE, meV/Å", "hf_test_forces_mae_ev_a", 1000.0, 1),
    ("HF test (covered region): energy MAE, meV/atom", "hf_test_energy_mae_mev_atom", 1.0, 2),
    ("HF test, uncovered region (no HF training data there): force MAE, meV/Å", "hf_uncovered_forces_mae_ev_a", 1000.0, 1),
    ("HF test, uncovered region: energy MAE, meV/atom", "hf_uncovered_energy_mae_mev_atom", 1.0, 2),
    ("LF test (models that also predict the low fidelity): force MAE, meV/Å", "lf_test_forces_mae_ev_a", 1000.0, 1),
    ("Training time per run (s; without compilation and without the shared LF pre-training, listed as lf_model)",
     "train_seconds", 1.0, 0),
)


def markdown(rows: Sequence[Mapping], order: Sequence[str]) -> str:
    """Markdown tables (one per metric): rows = strategies, columns = number of HF training
    structures (fraction); cells = mean ± sample std over seeds (just the value for one seed)."""
    n_hf = _n_hf([r for r in rows if r["strategy"] != "lf_model"])
    fractions = sorted(n_hf)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); cells are mean ± std over seeds."]
    for title, column, scale, digits in TABLES:
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
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping], order: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Learning curves: HF test force and energy MAE (covered region; uncovered region below when
    present) vs number of HF training structures, mean ± std over seeds, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    n_hf = _n_hf([r for r in rows if r["strategy"] != "lf_model"])
    panels = [("hf_test_forces_mae_ev_a", "HF test force MAE (meV/Å)", 1000.0),
              ("hf_test_energy_mae_mev_atom", "HF test energy MAE (meV/atom)", 1.0)]
    if _group(rows, "hf_uncovered_forces_mae_ev_a"):
        panels += [("hf_uncovered_forces_mae_ev_a", "uncovered-region force MAE (meV/Å)", 1000.0),
                   ("hf_uncovered_energy_mae_mev_atom", "uncovered-region energy MAE (meV/atom)", 1.0)]
    n_rows = len(panels) // 2
    fig, axes = plt.subplots(n_rows, 2, figsize=(10, 4 * n_rows), squeeze=False)
    for ax, (column, label, scale) in zip(axes.flat, panels):
        groups = _group(rows, column)
        for name in order:
            if name not in groups:
                continue
            fr = sorted(groups[name])
            x = [n_hf[f] for f in fr]
            values = [np.asarray(groups[name][f]) * scale for f in fr]
            mean = [v.mean() for v in values]
            std = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
        if "forces" in column and "lf_model" in groups:
            ref = np.mean([v for vs in groups["lf_model"].values() for v in vs]) * scale
            ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="LF model (no HF data)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(set(n_hf.values())))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel("HF training structures")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
