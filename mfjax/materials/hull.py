"""Phase stability of a set of structures: energies above the convex hull and formation energies.

``hull_table(entries)`` builds a pymatgen ``PhaseDiagram`` of :class:`HullEntry` objects (a name,
a composition and a total energy in eV, e.g. from ``entries_from_atoms``) and returns one
:class:`HullRow` per entry: energy per atom, formation energy per atom against the lowest-energy
elemental entries of the set, and the energy above the hull (eV/atom, >= 0). The set must hold at
least one elemental structure of every element it contains.

``classification_metrics(pred, ref, threshold)`` scores a stable (E_hull <= threshold) / unstable
classification against a reference as Matbench Discovery does (stable = positive: precision,
recall, F1, accuracy); ``compare`` adds the MAE of the energies above the hull and of the formation
energies. ``write_table`` writes rows (and reference columns and metrics) as CSV or JSON.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from mfjax.errors import ConfigError, DataError

__all__ = [
    "HullEntry", "HullRow", "StabilityMetrics", "classification_metrics", "compare", "entries_from_atoms",
    "hull_table", "write_table",
]

ZERO_TOL = 1e-8  # eV/atom: |E_hull| below this is floating-point noise of an entry on the hull


@dataclass(frozen=True)
class HullEntry:
    """One structure for the hull: ``composition`` maps element -> count (or a formula string);
    ``energy`` is its total energy, eV."""

    name: str
    composition: Mapping[str, float] | str
    energy: float


@dataclass(frozen=True)
class HullRow:
    """One entry's phase stability; energies in eV, per atom where the name says so."""

    name: str
    formula: str
    n_atoms: int
    energy: float
    energy_per_atom: float
    formation_energy_per_atom: float
    e_above_hull: float
    stable: bool


@dataclass(frozen=True)
class StabilityMetrics:
    """Stable = positive. Undefined ratios (e.g. precision with no predicted stable entry) are NaN."""

    n: int
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float


def entries_from_atoms(atoms_list: Sequence[Any], energies: Sequence[float], names: Sequence[str]) -> list[HullEntry]:
    """Hull entries of ASE structures with total ``energies`` (eV); compositions from the atoms."""
    if not len(atoms_list) == len(energies) == len(names):
        raise ValueError(f"{len(atoms_list)} structures, {len(energies)} energies, {len(names)} names")
    return [HullEntry(name, dict(Counter(atoms.get_chemical_symbols())), float(e))
            for atoms, e, name in zip(atoms_list, energies, names)]


def _composition(entry: HullEntry) -> Composition:
    try:
        composition = Composition(entry.composition)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"bad composition {entry.composition!r} ({exc})", source=entry.name) from None
    if composition.num_atoms <= 0:
        raise DataError("empty composition", source=entry.name)
    return composition


def hull_table(entries: Sequence[HullEntry], threshold: float = 0.0) -> list[HullRow]:
    """One :class:`HullRow` per entry (same order); ``stable`` = E_above_hull <= ``threshold``.

    Raises ``DataError`` for an empty set, a non-finite energy or an element without an elemental
    entry (the hull has no end point there).
    """
    if not entries:
        raise DataError("no structures: the hull needs at least one elemental structure per element")
    pd_entries = []
    for entry in entries:
        if not math.isfinite(entry.energy):
            raise DataError(f"energy {entry.energy} is not finite", source=entry.name, field="energy")
        pd_entries.append(PDEntry(_composition(entry), float(entry.energy), name=entry.name))
    elements = sorted({str(el) for e in pd_entries for el in e.composition.elements})
    missing = [el for el in elements
               if not any(e.composition.is_element and str(e.composition.elements[0]) == el for e in pd_entries)]
    if missing:
        raise DataError(f"no elemental structure of {', '.join(missing)} in the set: the hull needs one "
                        f"for every element ({', '.join(elements)})")
    diagram = PhaseDiagram(pd_entries)
    rows = []
    for entry, pd_entry in zip(entries, pd_entries):
        e_hull = float(diagram.get_e_above_hull(pd_entry))
        e_form = float(diagram.get_form_energy_per_atom(pd_entry))
        e_hull = 0.0 if abs(e_hull) < ZERO_TOL else e_hull
        composition = pd_entry.composition
        rows.append(HullRow(
            name=entry.name, formula=composition.reduced_formula, n_atoms=int(round(composition.num_atoms)),
            energy=float(entry.energy), energy_per_atom=float(pd_entry.energy_per_atom),
            formation_energy_per_atom=0.0 if abs(e_form) < ZERO_TOL else e_form,
            e_above_hull=e_hull, stable=bool(e_hull <= threshold),
        ))
    return rows


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def classification_metrics(pred: Sequence[float], ref: Sequence[float], threshold: float = 0.0) -> StabilityMetrics:
    """Stable (E_hull <= threshold, eV/atom) vs unstable of ``pred`` scored against ``ref``.

    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = their harmonic mean,
    accuracy = (TP + TN) / n, with stable the positive class (Matbench Discovery's convention).
    """
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if pred.shape != ref.shape or pred.ndim != 1:
        raise ValueError(f"pred and ref must be 1-D of one length, got shapes {pred.shape} and {ref.shape}")
    p, r = pred <= threshold, ref <= threshold
    tp, fp = int(np.sum(p & r)), int(np.sum(p & ~r))
    tn, fn = int(np.sum(~p & ~r)), int(np.sum(~p & r))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return StabilityMetrics(n=len(pred), threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
                            precision=precision, recall=recall, f1=f1, accuracy=_ratio(tp + tn, len(pred)))


def compare(rows: Sequence[HullRow], reference: Sequence[HullRow], threshold: float = 0.0) -> dict[str, Any]:
    """Metrics of ``rows`` against ``reference`` (the same structures in the same order): the
    classification at ``threshold``, the MAE (eV/atom) of E_above_hull and of formation energies and
    the R² of the formation energies."""
    if len(rows) != len(reference):
        raise DataError(f"{len(rows)} structures but {len(reference)} reference structures; "
                        "the reference must hold the same structures in the same order")
    for row, ref in zip(rows, reference):
        if (row.formula, row.n_atoms) != (ref.formula, ref.n_atoms):
            raise DataError(f"composition {ref.formula} ({ref.n_atoms} atoms) differs from "
                            f"{row.formula} ({row.n_atoms} atoms) of {row.name}", source=ref.name)
    e_hull = np.array([[r.e_above_hull, q.e_above_hull] for r, q in zip(rows, reference)])
    e_form = np.array([[r.formation_energy_per_atom, q.formation_energy_per_atom] for r, q in zip(rows, reference)])
    metrics = asdict(classification_metrics(e_hull[:, 0], e_hull[:, 1], threshold))
    metrics["mae_e_above_hull"] = float(np.mean(np.abs(e_hull[:, 0] - e_hull[:, 1])))
    metrics["mae_formation_energy"] = float(np.mean(np.abs(e_form[:, 0] - e_form[:, 1])))
    spread = float(np.sum((e_form[:, 1] - e_form[:, 1].mean()) ** 2))
    residual = float(np.sum((e_form[:, 0] - e_form[:, 1]) ** 2))
    metrics["r2_formation_energy"] = 1.0 - residual / spread if spread > 0 else float("nan")
    return metrics


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(path: str | Path, rows: Sequence[HullRow], reference: Sequence[HullRow] | None = None,
                metrics: Mapping[str, Any] | None = None) -> list[Path]:
    """Write the rows (with ``ref_*`` columns of ``reference``) as ``.csv`` or ``.json``.

    JSON holds {"rows": [...], "metrics": {...}}; next to a CSV the metrics go to
    ``<stem>.metrics.json``. Returns the files written.
    """
    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise ConfigError(f"{str(path)!r}: a hull table file must end in .csv or .json")
    records = []
    for k, row in enumerate(rows):
        record = asdict(row)
        if reference is not None:
            ref = reference[k]
            record.update(ref_energy_per_atom=ref.energy_per_atom,
                          ref_formation_energy_per_atom=ref.formation_energy_per_atom,
                          ref_e_above_hull=ref.e_above_hull, ref_stable=ref.stable)
        records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if path.suffix == ".json":
        payload = {"rows": records, "metrics": {k: _jsonable(v) for k, v in (metrics or {}).items()}}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return written
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else [f for f in HullRow.__annotations__])
        writer.writeheader()
        writer.writerows(records)
    if metrics:
        side = path.with_suffix(".metrics.json")
        side.write_text(json.dumps({k: _jsonable(v) for k, v in metrics.items()}, indent=2) + "\n")
        written.append(side)
    return written
