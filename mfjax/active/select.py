"""``select``: choose N pool structures to label at the high fidelity (the library under ``mfjax select``).

``select(model, frames, n, rule, hf=..., lf=...)`` predicts the pool (``pool.predict_pool``), scores
or embeds it (``rules``) and returns a ``Selection``; ``write_selection`` writes the chosen frames
as an extxyz ready for ``mfjax label`` (geometry only, labels dropped; ``info`` keeps
``structure_id`` and gains ``select_rule``, ``select_score``, ``select_rank``, ``pool_index``).
``reference`` frames (e.g. the structures already labelled at HF) make the diversity rules pick
far from them, not only from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np

from mfjax.active.pool import predict_pool
from mfjax.active.rules import (
    ENSEMBLE_RULES,
    RULES,
    delta_score,
    disagreement,
    farthest_point,
    kmeans_pp,
    random_choice,
    standardise,
    top_n,
)
from mfjax.errors import ConfigError
from mfjax.model import Model

__all__ = ["Selection", "default_fidelities", "select", "write_selection"]


@dataclass
class Selection:
    """indices: chosen pool indices in pick order [N]; scores: the rule's score of every pool
    structure [M] (NaN where the rule has none: random; diversity rules: distance when picked);
    rule: its name."""

    indices: np.ndarray
    scores: np.ndarray
    rule: str


def default_fidelities(model: Model, hf: str | None, lf: str | None) -> tuple[str, str | None]:
    """(HF, LF) names: HF defaults to the model's last fidelity, LF to its first other than HF."""
    names = tuple(model.fidelities)
    hf = names[-1] if hf is None else hf
    model.fidelity_index(hf)
    if lf is None:
        lf = next((f for f in names if f != hf), None)
    elif lf == hf:
        raise ConfigError(f"the low fidelity must differ from the high one ({hf!r})")
    else:
        model.fidelity_index(lf)
    return hf, lf


def _pick_distances(x: np.ndarray, chosen: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """[M] scores of a diversity pick: each chosen point's distance to the nearest earlier pick or
    reference point when it was picked (NaN for the rest)."""
    out = np.full(len(x), np.nan)
    seen = [] if reference is None else list(reference)
    for k in chosen:
        out[k] = float(np.min(np.linalg.norm(np.asarray(seen) - x[k], axis=1))) if seen else \
            float(np.linalg.norm(x[k] - x.mean(axis=0)))
        seen.append(x[k])
    return out


def select(model: Model, frames: Sequence[ase.Atoms], n: int, rule: str, *, hf: str | None = None,
           lf: str | None = None, seed: int = 0, reference: Sequence[ase.Atoms] = (),
           batch_size: int = 16) -> Selection:
    """Choose ``n`` of ``frames`` by ``rule`` (``RULES``); see the module docstring."""
    if rule not in RULES:
        raise ConfigError(f"unknown selection rule {rule!r}; choose from {sorted(RULES)}")
    if not frames:
        raise ConfigError("the pool is empty")
    if not 1 <= n <= len(frames):
        raise ConfigError(f"cannot select {n} structures from a pool of {len(frames)} (need 1 <= N <= pool size)")
    if rule in ENSEMBLE_RULES and (model.ensemble_size or 1) < 2:
        raise ConfigError(f"rule {rule!r} needs an ensemble model (train.ensemble: K >= 2); this model is a single "
                          f"potential")
    if rule == "random":
        return Selection(random_choice(len(frames), n, seed), np.full(len(frames), np.nan), rule)
    hf, lf = default_fidelities(model, hf, lf)
    if rule == "delta" and lf is None:
        raise ConfigError("rule 'delta' needs a model with a low fidelity besides the high one")
    wanted = [hf] + ([lf] if rule == "delta" else [])
    reference = list(reference) if rule in ("fps", "kmeans++", "weighted_fps") else []  # only diversity uses it
    pred = predict_pool(model, list(frames) + reference, wanted, batch_size=batch_size)
    m = len(frames)
    if rule == "disagreement":
        scores = disagreement(pred, hf)[:m]
        return Selection(top_n(scores, n), scores, rule)
    if rule == "delta":
        scores = delta_score(pred, hf, lf)[:m]
        return Selection(top_n(scores, n), scores, rule)
    x = standardise(pred.features)
    pool_x, ref_x = x[:m], (x[m:] if len(reference) else None)
    if rule == "kmeans++":
        chosen = kmeans_pp(pool_x, n, seed, ref_x)
        return Selection(chosen, _pick_distances(pool_x, chosen, ref_x), rule)
    weights = None
    if rule == "weighted_fps":
        u = disagreement(pred, hf)[:m]
        weights = u / u.mean() if u.mean() > 0 else None
    chosen = farthest_point(pool_x, n, ref_x, weights)
    return Selection(chosen, _pick_distances(pool_x, chosen, ref_x), rule)


def write_selection(frames: Sequence[ase.Atoms], selection: Selection, path: str | Path, *,
                    source: str = "pool") -> Path:
    """Write the chosen frames (pick order) to ``path`` (extxyz) for ``mfjax label``."""
    path = Path(path)
    out = []
    for rank, k in enumerate(selection.indices):
        atoms = frames[int(k)]
        chosen = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        info = {key: value for key, value in atoms.info.items() if key not in ("energy", "free_energy", "stress")}
        info.setdefault("structure_id", f"{source}-{int(k)}")
        score = float(selection.scores[int(k)])
        info.update(select_rule=selection.rule, select_rank=rank, pool_index=int(k),
                    select_score=score if np.isfinite(score) else -1.0)
        chosen.info.update(info)
        out.append(chosen)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(tmp, out, format="extxyz")
    tmp.replace(path)
    return path
