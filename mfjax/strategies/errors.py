"""Per-structure test errors of one ablation run, saved as ``OUT/errors/<run_tag>.npz``.

For every HF test region (``AblationData.test_sets()``: "test" = the covered HF test split, then
the named ``ablation.regions``) the file holds, per structure (arrays [N], in test-set order):

* ``<region>__structure_id``: the frame's ``structure_id`` (``source:index`` when it has none);
* ``<region>__n_atoms``;
* ``<region>__energy_error_mev_atom``: (predicted - reference) energy per atom, meV/atom (NaN
  without an energy label);
* ``<region>__forces_mae_ev_a``: mean |predicted - reference| force component, eV/Å (NaN without
  force labels, e.g. CCSD(T) energies);
* ``<region>__forces_count``: labelled force components (3 x atoms, 0 without forces).

``forces_count``-weighted means of ``forces_mae_ev_a`` and the mean of ``|energy_error_mev_atom|``
over a region reproduce the ``evaluate`` metrics of the results row (mfjax.strategies.paired).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mfjax.data.structures import Structure
from mfjax.strategies.base import Context, Outcome

__all__ = ["FIELDS", "run_tag", "structure_errors", "run_errors", "save_errors", "load_errors"]

FIELDS = ("structure_id", "n_atoms", "energy_error_mev_atom", "forces_mae_ev_a", "forces_count")


def run_tag(name: str, fraction: float, seed: int) -> str:
    """The name of one run: its stage checkpoints, exported model and error file."""
    return f"{name}_f{fraction:g}_s{seed}"


def _identifier(s: Structure) -> str:
    return s.structure_id if s.structure_id is not None else f"{s.source}:{s.index}"


def structure_errors(structures: Sequence[Structure], predictions: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """{field: [N]} of ``FIELDS`` for labelled ``structures`` and their predictions
    ({"energy": eV, "forces": [n, 3] eV/Å}, as from ``Context.predict``)."""
    if len(structures) != len(predictions):
        raise ValueError(f"{len(structures)} structures but {len(predictions)} predictions")
    n = len(structures)
    out = {"structure_id": np.array([_identifier(s) for s in structures], dtype=str),
           "n_atoms": np.array([s.num_atoms for s in structures], dtype=np.int64),
           "energy_error_mev_atom": np.full(n, np.nan), "forces_mae_ev_a": np.full(n, np.nan),
           "forces_count": np.zeros(n, dtype=np.int64)}
    for k, (s, p) in enumerate(zip(structures, predictions)):
        if s.energy is not None:
            out["energy_error_mev_atom"][k] = 1000.0 * (float(p["energy"]) - float(s.energy)) / s.num_atoms
        if s.forces is not None:
            diff = np.abs(np.asarray(p["forces"], np.float64) - np.asarray(s.forces, np.float64))
            out["forces_mae_ev_a"][k] = float(diff.mean())
            out["forces_count"][k] = diff.size
    return out


def run_errors(ctx: Context, outcome: Outcome) -> dict[str, dict[str, np.ndarray]]:
    """{region: structure_errors} of ``outcome.model`` on every HF test region (empty regions skipped)."""
    return {region: structure_errors(frames, ctx.predict(outcome.model, frames))
            for region, frames in ctx.data.test_sets().items() if frames}


def save_errors(path: str | Path, errors: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Write ``{region: {field: [N]}}`` to ``path`` (.npz, atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{f"{region}__{field}": np.asarray(values) for region, fields in errors.items()
                     for field, values in fields.items()})
    os.replace(tmp, path)
    return path


def load_errors(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The ``{region: {field: [N]}}`` of :func:`save_errors`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            region, field = key.rsplit("__", 1)
            out.setdefault(region, {})[field] = data[key]
    return out
