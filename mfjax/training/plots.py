"""Parity plots (reference vs predicted) per fidelity for energy per atom and force components."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _panel(ax, ref, pred, title: str, unit: str) -> None:
    ref, pred = np.asarray(ref), np.asarray(pred)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, zorder=0)
    ax.scatter(ref, pred, s=6, alpha=0.6)
    mae = float(np.mean(np.abs(pred - ref)))
    ax.set_title(f"{title}\nMAE {mae:.4g} {unit}, n = {ref.size}", fontsize=9)
    ax.set_xlabel(f"reference ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.set_aspect("equal", adjustable="datalim")


def relative_energies(ref, pred, composition) -> tuple[np.ndarray, np.ndarray]:
    """Energies per atom minus a per-element linear reference fitted (least squares) to the reference
    totals, so that a plot of few compositions shows the errors, not the composition offsets."""
    ref, pred = np.asarray(ref, float), np.asarray(pred, float)
    if not composition or len(composition) != ref.size:
        return ref, pred
    elements = sorted({z for c in composition for z in c})
    counts = np.array([[c.get(z, 0) for z in elements] for c in composition], float)
    n = counts.sum(1)
    w, *_ = np.linalg.lstsq(counts, ref * n, rcond=None)
    base = counts @ w / n
    return ref - base, pred - base


def parity_plots(parity, out_dir: str | Path) -> list[Path]:
    """One PNG per fidelity (``parity_<fidelity>.png``) with energy/atom and force panels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(set(parity.energy) | set(parity.forces)):
        panels = [(k, getattr(parity, k)[name]) for k in ("energy", "forces") if name in getattr(parity, k)]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
        for ax, (kind, (ref, pred)) in zip(axes[0], panels):
            if kind == "energy":
                ref, pred = relative_energies(ref, pred, parity.composition.get(name))
                _panel(ax, ref, pred, f"{name}: energy per atom (minus per-element fit)", "eV/atom")
            else:
                _panel(ax, ref, pred, f"{name}: force components", "eV/Å")
        fig.tight_layout()
        path = out_dir / f"parity_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
