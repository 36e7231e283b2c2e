"""Paired comparisons of an ablation's strategies from their per-structure test errors.

Input: the per-run error files (``mfjax.strategies.errors``, keyed by (strategy, HF fraction, seed)).
For every HF test region and fraction, and for force MAE (meV/Å) and energy MAE (meV/atom):

* ``comparisons``: ``multi_fidelity`` minus every other strategy, and ``multi_fidelity_heads`` and
  ``append`` minus the best single-fidelity baseline (the one of hf_only / transfer / delta with
  the lowest mean force MAE in that region and fraction, energy MAE without forces — chosen on the
  test data itself, so those two comparisons flatter the baseline slightly). Each is the mean paired difference over the
  seeds both strategies ran and the structures both have labels for, with its hierarchical
  bootstrap 95 % interval (``mfjax.strategies.stats``) and a verdict ("<a> better" / "<a> worse"
  only when the interval excludes zero, else "tie");
* ``curve_intervals``: each strategy's mean error with its interval (the learning-curve bands).

A metric without labels in a region (forces of energy-only CCSD(T) data) gives no entry, not zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mfjax.strategies.errors import load_errors, run_tag
from mfjax.strategies.stats import Interval, hierarchical_bootstrap, paired_difference, verdict

__all__ = ["METRICS", "REFERENCE", "SINGLE_FIDELITY", "RunKey", "load_run_errors", "comparisons", "curve_intervals"]

#: metric -> (error field, scale, unit)
METRICS = {"forces_mae": ("forces_mae_ev_a", 1000.0, "meV/Å"), "energy_mae": ("energy_error_mev_atom", 1.0, "meV/atom")}
#: The strategy every other one is compared with.
REFERENCE = "multi_fidelity"
#: Baselines that train one fidelity's model (the best of them is compared with the other joint strategies).
SINGLE_FIDELITY = ("hf_only", "transfer", "delta")
#: Joint strategies compared with the best single-fidelity baseline.
JOINT_VS_BEST = ("multi_fidelity_heads", "append")

RunKey = tuple[str, float, int]  # (strategy, hf_fraction, seed)
Errors = Mapping[RunKey, Mapping[str, Mapping[str, np.ndarray]]]


def load_run_errors(directory: str | Path, rows: Sequence[Mapping]) -> dict[RunKey, dict]:
    """{(strategy, fraction, seed): {region: {field: [N]}}} of the rows whose error file exists."""
    out = {}
    for r in rows:
        if r["strategy"] == "lf_model":
            continue
        key = (str(r["strategy"]), float(r["hf_fraction"]), int(r["seed"]))
        path = Path(directory) / f"{run_tag(*key)}.npz"
        if path.exists():
            out[key] = load_errors(path)
    return out


def _per_structure(fields: Mapping[str, np.ndarray], metric: str) -> tuple[dict[str, float], dict[str, float]]:
    """({structure_id: value}, {structure_id: weight}) of the labelled structures of one region."""
    field, scale, _ = METRICS[metric]
    values = np.asarray(fields[field], np.float64)
    values = scale * (np.abs(values) if metric == "energy_mae" else values)
    weights = np.asarray(fields["forces_count"], np.float64) if metric == "forces_mae" else np.ones(len(values))
    ids = [str(i) for i in fields["structure_id"]]
    ok = np.isfinite(values) & (weights > 0)
    return ({i: v for i, v, k in zip(ids, values, ok) if k}, {i: w for i, w, k in zip(ids, weights, ok) if k})


def _matrices(errors: Errors, strategies: Sequence[str], fraction: float, region: str, metric: str):
    """([S, N] per strategy, weights [N]) on the seeds every strategy ran and the structures all have
    labels for; None when there is nothing to compare."""
    seeds = None
    for name in strategies:
        have = {k[2] for k in errors if k[0] == name and k[1] == fraction and region in errors[k]}
        seeds = have if seeds is None else seeds & have
    if not seeds:
        return None
    seeds = sorted(seeds)
    tables = {(name, s): _per_structure(errors[(name, fraction, s)][region], metric) for name in strategies for s in seeds}
    common = set.intersection(*(set(v) for v, _ in tables.values()))
    if not common:
        return None
    ids = sorted(common)
    weights = np.array([tables[(strategies[0], seeds[0])][1][i] for i in ids])
    mats = [np.array([[tables[(name, s)][0][i] for i in ids] for s in seeds]) for name in strategies]
    return mats, weights


def _interval(errors: Errors, name: str, fraction: float, region: str, metric: str, samples: int, seed: int):
    found = _matrices(errors, [name], fraction, region, metric)
    if found is None:
        return None
    (values,), weights = found
    return hierarchical_bootstrap(values, weights, samples=samples, seed=seed)


def curve_intervals(errors: Errors, region: str, metric: str, *, samples: int = 2000,
                    seed: int = 0) -> dict[str, dict[float, Interval]]:
    """{strategy: {fraction: mean error with its interval}} in ``region`` (learning-curve bands)."""
    out: dict[str, dict[float, Interval]] = {}
    for name, fraction in sorted({(k[0], k[1]) for k in errors}):
        iv = _interval(errors, name, fraction, region, metric, samples, seed)
        if iv is not None:
            out.setdefault(name, {})[fraction] = iv
    return out


def _pairs(errors: Errors, fraction: float, region: str) -> list[tuple[str, str, str]]:
    """(a, b, label of b) pairs to compare at one (fraction, region)."""
    present = {k[0] for k in errors if k[1] == fraction}
    pairs = [(REFERENCE, b, b) for b in sorted(present) if REFERENCE in present and b != REFERENCE]
    means: dict[str, float] = {}
    for metric in METRICS:  # force MAE where there are forces, else energy MAE
        for name in SINGLE_FIDELITY:
            found = _matrices(errors, [name], fraction, region, metric) if name in present else None
            if found is not None:
                (values,), weights = found
                means[name] = float((values @ weights / weights.sum()).mean())
        if means:
            break
    if means:
        best = min(means, key=means.get)
        pairs += [(a, best, f"best single-fidelity ({best})") for a in JOINT_VS_BEST if a in present]
    return pairs


def comparisons(errors: Errors, regions: Sequence[str], n_hf: Mapping[float, int] | None = None, *,
                samples: int = 2000, seed: int = 0, order: Sequence[str] = ()) -> list[dict]:
    """Paired differences (a - b, lower = a better) per region, fraction, metric and pair; plain dicts
    (summary.json): region, hf_fraction, n_hf_train, metric, unit, a, b, b_label, difference,
    ci_low, ci_high, level, verdict, mean_a, mean_b, n_seeds, n_structures."""
    rank = {name: k for k, name in enumerate(order)}
    out = []
    for region in regions:
        for fraction in sorted({k[1] for k in errors}):
            pairs = _pairs(errors, fraction, region)
            for metric, (_, _, unit) in METRICS.items():
                for a, b, label in sorted(pairs, key=lambda p: (p[2].startswith("best"), rank.get(p[1], 99))):
                    found = _matrices(errors, [a, b], fraction, region, metric)
                    if found is None:
                        continue
                    (va, vb), weights = found
                    diff = paired_difference(va, vb, weights, samples=samples, seed=seed)
                    out.append({"region": region, "hf_fraction": fraction,
                                "n_hf_train": None if n_hf is None else n_hf.get(fraction),
                                "metric": metric, "unit": unit, "a": a, "b": b, "b_label": label,
                                "difference": diff.mean, "ci_low": diff.low, "ci_high": diff.high, "level": diff.level,
                                "verdict": verdict(diff, a), "mean_a": float((va @ weights / weights.sum()).mean()),
                                "mean_b": float((vb @ weights / weights.sum()).mean()),
                                "n_seeds": diff.n_seeds, "n_structures": diff.n_structures})
    return out
