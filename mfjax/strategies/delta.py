"""Δ-learning (SPEC §5): an LF model plus a Δ model of (HF - LF) energies, forces and stress.

The Δ labels need LF labels on the HF structures: the paired LF frame (same ``structure_id`` and
geometry) when the data has one, else the LF model's prediction (``ablation.delta_labels``: auto,
paired, predicted); the outcome notes say which was used. The sum is one potential,
``Model.delta(lf, low, Δ)`` (exported as a "delta" bundle by ``Model.export``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from mfjax.data.structures import Structure
from mfjax.errors import DataError
from mfjax.model import Model
from mfjax.strategies.base import Context, Outcome
from mfjax.strategies.data import low_partners

__all__ = ["delta_structures", "low_labels", "run"]


def delta_structures(
    hf: Sequence[Structure], low: Sequence[dict[str, Any] | Structure | None], name: str
) -> list[Structure]:
    """HF structures relabelled with HF - LF (energy, forces, stress where both exist).

    low: per structure, the paired LF ``Structure`` or a prediction dict {"energy", "forces",
    "stress"?}. The Δ structures keep the geometry, weights and ids, and get fidelity ``name``.
    """
    out = []
    for h, l in zip(hf, low):
        if l is None:
            raise DataError("no low-fidelity label for a Δ structure", source=h.source, frame=h.index, field="structure_id")
        get = (lambda k: getattr(l, k)) if isinstance(l, Structure) else (lambda k: l.get(k))
        diff = lambda a, b: None if a is None or b is None else np.asarray(a, np.float64) - np.asarray(b, np.float64)  # noqa: E731
        energy = diff(h.energy, get("energy"))
        out.append(replace(h, fidelity=name, energy=None if energy is None else float(energy),
                           forces=diff(h.forces, get("forces")), stress=diff(h.stress, get("stress"))))
    return out


def low_labels(ctx: Context, lf: Model, hf: Sequence[Structure]) -> tuple[list, dict[str, int]]:
    """LF labels of ``hf`` per ``ablation.delta_labels`` and the count of each source."""
    mode = ctx.settings.delta_labels
    partners = low_partners(ctx.data, hf) if mode != "predicted" else [None] * len(hf)
    if mode == "paired" and any(p is None for p in partners):
        missing = next(s for s, p in zip(hf, partners) if p is None)
        raise DataError("delta_labels=paired but this HF frame has no LF partner (structure_id)",
                        source=missing.source, frame=missing.index, field="structure_id")
    need = [k for k, p in enumerate(partners) if p is None]
    labels: list = list(partners)
    if need:
        as_low = [replace(hf[k], fidelity=ctx.data.low) for k in need]
        for k, pred in zip(need, ctx.predict(lf, as_low)):
            labels[k] = pred
    return labels, {"paired": len(hf) - len(need), "predicted": len(need)}


def _source(counts: dict[str, int]) -> str:
    if counts["predicted"] == 0:
        return "paired"
    return "predicted" if counts["paired"] == 0 else f"paired {counts['paired']} + predicted {counts['predicted']}"


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    d = ctx.data
    lf_fit = ctx.lf_model(seed)
    lf = lf_fit.model
    train_labels, train_counts = low_labels(ctx, lf, hf_train)
    valid_labels, valid_counts = low_labels(ctx, lf, d.hf_valid)
    train = delta_structures(hf_train, train_labels, d.high)
    valid = delta_structures(d.hf_valid, valid_labels, d.high)
    ctx.log(f"  delta: LF labels of the HF training structures: {_source(train_counts)}; "
            f"validation: {_source(valid_counts)}")
    model = ctx.fresh(ctx.spec((d.high,)), train, seed)
    fitted = ctx.stage_fit("delta", model, train, valid, seed=seed, select=d.high, stage="delta")
    notes = {"n_lf_train": len(d.lf_train), "delta_low_labels": _source(train_counts)}
    return Outcome(Model.delta(lf, d.low, fitted.model), [fitted], notes, shared=[lf_fit])
