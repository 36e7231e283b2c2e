"""results.md and the plots of the materials evaluation (used by ``run.py``).

Every number of a strategy is the mean over seeds with a 95 % interval from
``mfjax.strategies.stats.hierarchical_bootstrap``: per-structure errors (formation energies, hull
distances) resample seeds, then structures; per-run scalars (F1, elastic constants, MD) resample
seeds only. With one seed there is no interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mfjax.strategies.stats import Interval, hierarchical_bootstrap  # noqa: E402

__all__ = ["interval", "markdown", "plot_all"]

#: (column, title, digits) per table.
FORMATION = (("formation_mae_mev_atom", "formation E MAE (meV/atom)", 1), ("formation_r2", "formation E R²", 3),
             ("e_hull_mae_mev_atom", "E_hull MAE (meV/atom)", 1), ("precision", "precision", 2),
             ("recall", "recall", 2), ("f1", "F1", 2))
ELASTIC = (("a0_eos", "a0 E(V) (Å)", 4), ("a0_stress", "a0 σ=0 (Å)", 4), ("b_eos", "B E(V) (GPa)", 1),
           ("c11", "C11 (GPa)", 1), ("c12", "C12 (GPa)", 1), ("c44", "C44 (GPa)", 1))
MD = (("stability_time_ps", "stability: time to failure (ps)", 2), ("stability_stable", "stable runs (fraction)", 2),
      ("diffusion_a2_ps", "D (Å²/ps)", 3), ("diffusion_ratio", "D / D_ref", 2),
      ("transport_time_ps", "hot run: time to failure (ps)", 2))
#: metric -> per-structure error key of ``Evaluation.errors`` (bootstrapped over structures too).
PER_STRUCTURE = {"formation_mae_mev_atom": "formation", "e_hull_mae_mev_atom": "e_hull"}


def interval(runs: Sequence[dict], metric: str, errors: Sequence[dict] | None = None,
             samples: int = 2000, seed: int = 0) -> Interval | None:
    """Mean over ``runs`` (seeds) of ``metric`` with its bootstrap interval (None: no finite value)."""
    key = PER_STRUCTURE.get(metric)
    if key is not None and errors is not None and all(key in e for e in errors) and errors:
        values = np.stack([e[key] for e in errors])
    else:
        values = np.array([[float(r.get(metric, math.nan))] for r in runs], np.float64)
        values = values[np.isfinite(values[:, 0])]
    if values.size == 0:
        return None
    return hierarchical_bootstrap(values, samples=samples, seed=seed)


def _fmt(iv: Interval | None, digits: int) -> str:
    if iv is None:
        return "-"
    if iv.n_seeds < 2:
        return f"{iv.mean:.{digits}f}"
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def _groups(rows: Sequence[dict], order: Sequence[str]) -> list[tuple[str, float, list[int]]]:
    """(strategy, fraction, row indices) in table order."""
    out = []
    for fraction in sorted({float(r["hf_fraction"]) for r in rows}):
        for name in order:
            idx = [k for k, r in enumerate(rows) if r["strategy"] == name and float(r["hf_fraction"]) == fraction]
            if idx:
                out.append((name, fraction, idx))
    return out


def _table(title: str, columns, rows, errors, order, reference: dict | None, boot: dict) -> list[str]:
    lines = [f"### {title}", "", "| strategy | HF fraction | seeds | " + " | ".join(c[1] for c in columns) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    if reference is not None:
        cells = [("-" if not np.isfinite(reference.get(c, math.nan)) else f"{reference[c]:.{d}f}") for c, _, d in columns]
        lines.append("| **r2SCAN reference** | - | - | " + " | ".join(cells) + " |")
    for name, fraction, idx in _groups(rows, order):
        runs = [rows[k] for k in idx]
        errs = [errors[k] for k in idx]
        cells = [_fmt(interval(runs, c, errs, **boot), d) for c, _, d in columns]
        lines.append(f"| {name} | {fraction:g} | {len(idx)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _failures(rows: Sequence[dict], order: Sequence[str]) -> list[str]:
    """Why each MD run stopped (``run_md``'s reason), one line per strategy and run."""
    lines = ["Why the MD runs stopped (per seed; \"stable\" = ran its whole length):", ""]
    for name, fraction, idx in _groups(rows, order):
        for run in ("stability", "transport"):
            # "" = run_md found no failure; a row without the column (hand-made) is not called stable
            reasons = [rows[k].get(f"{run}_failure", "not recorded") or "stable" for k in idx]
            lines.append(f"- {name} ({fraction:g}), {run}: " + "; ".join(
                f"seed {rows[k]['seed']}: {why}" for k, why in zip(idx, reasons)))
    return lines + [""]


def markdown(rows: Sequence[dict], errors: Sequence[dict], order: Sequence[str], reference: dict, header: Sequence[str],
             md_reference: str | None, boot: dict) -> str:
    """The whole results.md."""
    lines = ["# Si–C materials evaluation", "", *header, ""]
    lines += _table("(a, b) Formation energies at held-out compositions and stability against the r2SCAN hull",
                    FORMATION, rows, errors, order, None, boot)
    lines += _table("(c) 3C-SiC lattice constant and clamped-ion elastic constants (on the reference geometries)",
                    ELASTIC, rows, errors, order, reference, boot)
    if md_reference is not None:
        lines += _table(f"(d) MD at high temperature; D / D_ref against `{md_reference}` of the same fraction and seed",
                        MD, rows, errors, order, None, boot)
        lines += _failures(rows, order)
    return "\n".join(lines) + "\n"


def plot_all(out: Path, rows: Sequence[dict], per_structure: Sequence[dict], order: Sequence[str],
             reference: dict, threshold: float) -> list[Path]:
    """formation.png (parity and hull), elastic.png (relative errors) and md.png; the paths written."""
    written = []
    names = [n for n in order if any(r["strategy"] == n for r in rows)]
    colours = {n: plt.cm.tab10(k % 10) for k, n in enumerate(names)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    ref_points = {}
    for p in per_structure:
        ref_points[p["structure_id"]] = (float(p["x_C"]), p["ref_e_form_mev_atom"])
        if p["heldout"]:
            ax.scatter(p["ref_e_form_mev_atom"], p["e_form_mev_atom"], s=14, color=colours.get(p["strategy"]),
                       alpha=0.7)
        if p["seed"] == min(int(r["seed"]) for r in rows):
            bx.scatter(float(p["x_C"]), p["e_form_mev_atom"], s=12, color=colours.get(p["strategy"]), alpha=0.6)
    lim = [min(v for _, v in ref_points.values()) - 50, max(v for _, v in ref_points.values()) + 50]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(xlabel="r2SCAN formation energy (meV/atom)", ylabel="model (meV/atom)", title="held-out compositions")
    xs = np.array([v[0] for v in ref_points.values()])
    ys = np.array([v[1] for v in ref_points.values()])
    bx.scatter(xs, ys, s=40, facecolors="none", edgecolors="k", label="r2SCAN")
    hull = _lower_hull(xs, ys)
    bx.plot(hull[:, 0], hull[:, 1], "k-", lw=1)
    bx.set(xlabel="x_C", ylabel="formation energy (meV/atom)", title=f"hull (first seed; stable: E_hull <= {threshold * 1000:g} meV/atom)")
    for n in names:
        ax.scatter([], [], color=colours[n], label=n)
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out / "formation.png"))
    written.append(_bars(out / "elastic.png", rows, names, colours, [c for c, _, _ in ELASTIC], reference,
                         "(model - r2SCAN) / r2SCAN (%)"))
    if any("diffusion_a2_ps" in r for r in rows):
        written.append(_bars(out / "md.png", rows, names, colours, ["stability_time_ps", "transport_time_ps",
                                                                    "diffusion_a2_ps"], None, "mean over seeds"))
    return written


def _lower_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    points = sorted(set(zip(x.tolist(), y.tolist())))
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2 and (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1]) - \
                (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0]) <= 0:
            hull.pop()
        hull.append(p)
    return np.array(hull)


def _bars(path: Path, rows, names, colours, metrics, reference: dict | None, ylabel: str) -> Path:
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, name in enumerate(names):
            values = np.array([float(r.get(metric, math.nan)) for r in rows if r["strategy"] == name], np.float64)
            values = values[np.isfinite(values)]
            if reference is not None:
                values = 100.0 * (values - reference.get(metric, math.nan)) / reference.get(metric, math.nan)
            if values.size:
                ax.bar(k, values.mean(), color=colours[name],
                       yerr=values.std() if values.size > 1 else None, capsize=2)
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.axhline(0.0, color="k", lw=0.6)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
