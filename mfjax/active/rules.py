"""Selection rules: per-structure scores from pool predictions and the choosers that turn scores or
features into N indices. Pure numpy; every chooser is deterministic given its seed.

Scores (per pool structure, from ``PoolPredictions``; K members, HF/LF the two fidelities):

* ``disagreement``: the HF head's largest per-atom force std over members, eV/Å
  (``max_i sqrt(sum_c var_k F^HF_kic)``; needs an ensemble, K >= 2);
* ``delta``: the predicted HF-LF force difference (RMS over atoms of the members' mean
  ``|F^HF - F^LF|``) plus its uncertainty (the largest per-atom std over members of that
  difference; 0 for a single model), eV/Å: large where the fidelities differ and where the
  difference is least known;

Choosers: ``top_n`` (highest scores), ``farthest_point`` (farthest-point sampling; optional
weights make it uncertainty-weighted), ``kmeans_pp`` (k-means++ seeding, D^2 sampling), ``random``.
Features are standardised per column (pool statistics) before any distance.
"""

from __future__ import annotations

import numpy as np

from mfjax.active.pool import PoolPredictions

__all__ = [
    "ENSEMBLE_RULES",
    "RULES",
    "delta_score",
    "disagreement",
    "farthest_point",
    "kmeans_pp",
    "random_choice",
    "standardise",
    "top_n",
]

#: rule name -> one-line description (``mfjax select --rule``).
RULES = {
    "disagreement": "HF-head ensemble disagreement (largest per-atom force std), highest first",
    "delta": "predicted HF-LF force difference plus its ensemble uncertainty, highest first",
    "fps": "farthest-point sampling on the summed invariant features (diversity)",
    "kmeans++": "k-means++ seeding on the summed invariant features (diversity, seeded)",
    "weighted_fps": "farthest-point sampling with distances weighted by the HF disagreement",
    "random": "uniformly at random (seeded): the baseline",
}
ENSEMBLE_RULES = ("disagreement", "weighted_fps")


def disagreement(pred: PoolPredictions, hf: str) -> np.ndarray:
    """[M] eV/Å: per structure, the largest per-atom HF force std over members."""
    return np.array([float(np.sqrt(f.var(axis=0).sum(-1)).max()) for f in pred.forces[hf]])


def delta_score(pred: PoolPredictions, hf: str, lf: str) -> np.ndarray:
    """[M] eV/Å: RMS over atoms of the mean HF-LF force difference + its largest per-atom member std."""
    out = []
    for f_hf, f_lf in zip(pred.forces[hf], pred.forces[lf]):
        d = f_hf - f_lf  # [K, n, 3]
        mean = d.mean(axis=0)
        out.append(float(np.sqrt((mean**2).sum(-1).mean()) + np.sqrt(d.var(axis=0).sum(-1)).max()))
    return np.array(out)


def standardise(features: np.ndarray) -> np.ndarray:
    """[M, C] features with zero mean and unit std per column (constant columns left at 0)."""
    x = np.asarray(features, np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _check(n: int, m: int) -> None:
    if not 1 <= n <= m:
        raise ValueError(f"cannot choose {n} of {m}")


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` (ties: lower index first)."""
    _check(n, len(scores))
    return np.argsort(-np.asarray(scores), kind="stable")[:n]


def _initial_distance(x: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """[M]: distance of every point to the nearest reference point (to the pool mean without one)."""
    if reference is None or len(reference) == 0:
        return np.linalg.norm(x - x.mean(axis=0), axis=1)
    return np.min(np.linalg.norm(x[:, None, :] - reference[None, :, :], axis=-1), axis=1)


def farthest_point(x: np.ndarray, n: int, reference: np.ndarray | None = None,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Farthest-point sampling of ``n`` rows of ``x`` [M, C]: each pick maximises (distance to the
    nearest point picked so far or in ``reference`` [R, C]) x ``weights`` [M] (1 when None). The first
    pick is the point farthest from ``reference`` (from the pool mean without one)."""
    _check(n, len(x))
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    chosen: list[int] = []
    dist = _initial_distance(x, reference)
    if reference is None or len(reference) == 0:  # the pool mean only places the first pick
        chosen.append(int(np.argmax(dist * w)))
        dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    while len(chosen) < n:
        score = dist * w
        score[chosen] = -np.inf
        k = int(np.argmax(score))
        chosen.append(k)
        dist = np.minimum(dist, np.linalg.norm(x - x[k], axis=1))
    return np.array(chosen)


def kmeans_pp(x: np.ndarray, n: int, seed: int, reference: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding: each pick drawn with probability proportional to the squared distance to
    the nearest point picked so far (or in ``reference``); the first uniformly when there is no
    reference. Points already picked (distance 0) are never drawn again."""
    _check(n, len(x))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    dist = None if reference is None or len(reference) == 0 else _initial_distance(x, reference)
    for _ in range(n):
        if dist is None:
            k = int(rng.integers(len(x)))
        else:
            p = dist**2
            p[chosen] = 0.0
            k = int(rng.choice(len(x), p=p / p.sum())) if p.sum() > 0 else \
                int(rng.choice(np.setdiff1d(np.arange(len(x)), chosen)))
        chosen.append(k)
        d = np.linalg.norm(x - x[k], axis=1)
        dist = d if dist is None else np.minimum(dist, d)
    return np.array(chosen)


def random_choice(m: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct indices of ``m``, uniformly at random (seeded)."""
    _check(n, m)
    return np.random.default_rng(seed).choice(m, size=n, replace=False)
