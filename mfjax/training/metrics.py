"""Per-fidelity error metrics, accumulated over batches as sums and counts (never means of means).

Device side, :func:`metric_sums` turns one padded batch's predictions into [n_fid] sums; host side,
:class:`MetricAccumulator` adds them in float64 and :meth:`MetricAccumulator.result` divides.
Units of the results: energy meV/atom, forces eV/Å (per component), stress GPa (per Voigt component).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import Graph, node_graph_index
from mfjax.training.loss import GPA_PER_EV_A3, voigt

METRIC_KEYS = (
    "n_structures",
    "energy_mae_mev_atom",
    "energy_rmse_mev_atom",
    "forces_mae_ev_a",
    "forces_rmse_ev_a",
    "stress_mae_gpa",
)
SUM_KEYS = ("n", "e_abs", "e_sq", "e_cnt", "f_abs", "f_sq", "f_cnt", "s_abs", "s_cnt")


def metric_sums(pred: Mapping[str, jax.Array], graph: Graph, n_fidelities: int) -> dict[str, jax.Array]:
    """[n_fid] sums of absolute/squared errors and label counts of one padded graph."""
    glob = graph.globals
    fid = glob.fidelity
    node_graph = node_graph_index(graph)
    dtype = pred["energy"].dtype
    seg = lambda x, ids: jax.ops.segment_sum(x, ids, num_segments=n_fidelities)  # noqa: E731
    real = glob.graph_mask.astype(dtype)
    e_mask = (glob.energy_mask & glob.graph_mask).astype(dtype)
    e_err = jnp.where(e_mask > 0, (pred["energy"] - glob.energy.astype(dtype)) / jnp.maximum(graph.n_node, 1), 0.0)
    f_mask = (graph.nodes.forces_mask & glob.graph_mask[node_graph]).astype(dtype)
    f_err = jnp.where(f_mask[:, None] > 0, pred["forces"] - graph.nodes.forces.astype(dtype), 0.0)
    node_fid = fid[node_graph]
    out = {
        "n": seg(real, fid),
        "e_abs": seg(jnp.abs(e_err), fid),
        "e_sq": seg(e_err**2, fid),
        "e_cnt": seg(e_mask, fid),
        "f_abs": seg(jnp.abs(f_err).sum(-1), node_fid),
        "f_sq": seg((f_err**2).sum(-1), node_fid),
        "f_cnt": seg(3.0 * f_mask, node_fid),
    }
    s_mask = (glob.stress_mask & glob.graph_mask).astype(dtype)
    if "stress" in pred:
        s_err = jnp.where(s_mask[:, None] > 0, voigt(pred["stress"] - glob.stress.astype(dtype)), 0.0)
        out["s_abs"] = seg(jnp.abs(s_err).sum(-1), fid)
        out["s_cnt"] = seg(6.0 * s_mask, fid)
    else:
        out["s_abs"] = jnp.zeros(n_fidelities, dtype)
        out["s_cnt"] = jnp.zeros(n_fidelities, dtype)
    return out


def _ratio(num: float, den: float, scale: float = 1.0, root: bool = False) -> float | None:
    if den <= 0:
        return None
    value = num / den
    return float(scale * (math.sqrt(value) if root else value))


class MetricAccumulator:
    """Adds per-batch :func:`metric_sums` (any leading device axes are summed) in float64."""

    def __init__(self, fidelities: Sequence[str]):
        self.fidelities = tuple(fidelities)
        self.sums = {k: np.zeros(len(self.fidelities), np.float64) for k in SUM_KEYS}

    def add(self, sums: Mapping[str, jax.Array | np.ndarray]) -> None:
        for key in SUM_KEYS:
            value = np.asarray(sums[key], dtype=np.float64)
            self.sums[key] += value.reshape(-1, len(self.fidelities)).sum(0)

    def result(self) -> dict[str, dict[str, float | int | None]]:
        """{fidelity: {metric: value}} for every fidelity with at least one structure."""
        out = {}
        for i, name in enumerate(self.fidelities):
            s = {k: float(v[i]) for k, v in self.sums.items()}
            if s["n"] == 0:
                continue
            out[name] = {
                "n_structures": int(round(s["n"])),
                "energy_mae_mev_atom": _ratio(s["e_abs"], s["e_cnt"], 1000.0),
                "energy_rmse_mev_atom": _ratio(s["e_sq"], s["e_cnt"], 1000.0, root=True),
                "forces_mae_ev_a": _ratio(s["f_abs"], s["f_cnt"]),
                "forces_rmse_ev_a": _ratio(s["f_sq"], s["f_cnt"], root=True),
                "stress_mae_gpa": _ratio(s["s_abs"], s["s_cnt"], GPA_PER_EV_A3),
            }
        return out


def mean_metric(results: Mapping[str, Mapping[str, float | None]], key: str) -> float:
    """Mean of ``key`` over fidelities where it is defined (inf when none: never 'best')."""
    values = [r[key] for r in results.values() if r.get(key) is not None]
    return float(np.mean(values)) if values else math.inf


def format_table(results: Mapping[str, Mapping[str, float | int | None]], title: str = "") -> str:
    """A fixed-width text table, one row per fidelity."""
    header = ["fidelity", "n", "E MAE", "E RMSE", "F MAE", "F RMSE", "S MAE"]
    units = ["", "", "meV/at", "meV/at", "eV/Å", "eV/Å", "GPa"]
    rows = []
    for name, r in results.items():
        fmt = lambda v, p=".4f": "-" if v is None else format(v, p)  # noqa: E731
        rows.append([
            name, str(r["n_structures"]), fmt(r["energy_mae_mev_atom"], ".2f"), fmt(r["energy_rmse_mev_atom"], ".2f"),
            fmt(r["forces_mae_ev_a"]), fmt(r["forces_rmse_ev_a"]), fmt(r["stress_mae_gpa"]),
        ])
    widths = [max(len(x) for x in col) for col in zip(header, units, *rows)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    text = [title] if title else []
    text += [line(header), line(units), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    text += [line(r) for r in rows]
    return "\n".join(text)
