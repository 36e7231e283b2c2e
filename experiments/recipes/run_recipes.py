"""Multi-fidelity recipes against plain conditioning on one split (issue 17, item 4).

Every variant (config overrides of one base config) trains with ``mfjax.training.fit.fit`` on the
same training set — all low-fidelity training frames plus the same seeded subset of the covered
high-fidelity pool — for the same step budget and seed, keeps its best weights on the HF
validation frames, and is evaluated with ``mfjax.training.evaluation.evaluate`` on every HF test
region ("covered" test split, and each other value of ``recipes.region_key``, never trained on).

Outputs (``--output``, default ``experiments/recipes/results``):
  results.csv        one row per variant x seed x region (HF test energy/force MAE, steps, timings)
  results.md         mean over seeds per variant and region, and the difference to ``plain``
                     (paired 95 % bootstrap interval when mfjax.strategies.stats is available)
  errors/<variant>_seed<k>.npz   per HF test structure and region: ``<region>_forces_mae`` (meV/Å,
                     mean over the structure's components), ``<region>_forces_weight`` (its number
                     of force components), ``<region>_energy_mae`` (|ΔE|/atom, meV/atom),
                     ``<region>_structure_id``; the same structures in the same order for every
                     variant and seed, so stacking seeds gives the [seeds, structures] arrays of
                     ``mfjax.strategies.stats.paired_difference``.

Usage: python experiments/recipes/run_recipes.py experiments/recipes/config.yaml [--quick]
       [--variants plain,embedding] [--seeds 0,1] [--steps N] [--output DIR]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from mfjax.config import load_config
from mfjax.data.dataset import load_data
from mfjax.errors import MfjaxError
from mfjax.nn.model import count_parameters
from mfjax.strategies.data import species_covering_order
from mfjax.strategies.errors import structure_errors
from mfjax.training.compiled import StepCache
from mfjax.training.evaluation import evaluate, predict_structures
from mfjax.training.fit import fit
from mfjax.training.setup import batch_budget, initial_model
from mfjax.utils.configtools import ConfigError, read_yaml

try:  # the paired-interval module of issue 17 item 2; the npz files carry everything it needs
    from mfjax.strategies import stats
except ImportError:
    stats = None

RECIPE_KEYS = {"low", "high", "hf_fraction", "seeds", "steps", "eval_every_steps", "region_key",
               "covered", "variants", "quick"}
CSV_FIELDS = ["variant", "seed", "hf_fraction", "n_hf_train", "n_lf_train", "region", "n_test",
              "energy_mae_mev_atom", "forces_mae_mev_a", "n_params", "steps", "best_step", "seconds",
              "compile_seconds", "overrides"]


def read_recipes(path: Path, args) -> tuple[dict, dict]:
    """(base config dict, recipe settings) with the command-line overrides applied."""
    raw = read_yaml(path)
    if set(raw) != {"base", "recipes"}:
        raise ConfigError(f"{path}: expected exactly the top-level keys 'base' and 'recipes', got {sorted(raw)}")
    recipes = dict(raw["recipes"])
    unknown = sorted(set(recipes) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown recipes key(s) {unknown}; known: {sorted(RECIPE_KEYS)}")
    if args.quick:
        recipes.update(recipes.get("quick") or {})
    if args.steps is not None:
        recipes["steps"] = args.steps
    if args.seeds:
        recipes["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.variants:
        chosen = args.variants.split(",")
        missing = sorted(set(chosen) - set(recipes["variants"]))
        if missing:
            raise ConfigError(f"--variants: unknown {missing}; available: {list(recipes['variants'])}")
        recipes["variants"] = {name: recipes["variants"][name] for name in chosen}
    if not 0.0 < float(recipes["hf_fraction"]) <= 1.0:
        raise ConfigError(f"{path}: recipes.hf_fraction must be in (0, 1], got {recipes['hf_fraction']}")
    return raw["base"], recipes


def region(s, recipes: dict) -> str:
    """The HF region of a structure: ``recipes.covered`` unless its info says otherwise."""
    return str(s.info.get(recipes["region_key"], recipes["covered"]))


def split_data(loaded, recipes: dict) -> dict:
    """LF train, covered HF pool/valid, and {region: HF test frames} ("covered": the HF test split;
    every other region: its HF frames of any split, none trained on)."""
    low, high, covered = recipes["low"], recipes["high"], recipes["covered"]
    def hf(split):
        return [s for s in split if s.fidelity == high]

    regions: dict[str, list] = {covered: [s for s in hf(loaded.test) if region(s, recipes) == covered]}
    for s in hf(loaded.train + loaded.valid + loaded.test):
        if region(s, recipes) != covered:
            regions.setdefault(region(s, recipes), []).append(s)
    return {
        "lf_train": [s for s in loaded.train if s.fidelity == low],
        "hf_pool": [s for s in hf(loaded.train) if region(s, recipes) == covered],
        "hf_valid": [s for s in hf(loaded.valid) if region(s, recipes) == covered],
        "regions": regions,
    }


def hf_subset(pool: list, fraction: float, seed: int) -> list:
    """The HF training subset ``mfjax ablate`` draws: the first round(fraction x pool) frames (at least
    1) of the seeded permutation, reordered so that its first frames cover every element."""
    order = species_covering_order(pool, np.random.default_rng([seed, 7919]).permutation(len(pool)))
    return [pool[k] for k in order[: max(1, round(fraction * len(pool)))]]


def per_structure_errors(model, structures, budget, cache) -> dict[str, np.ndarray]:
    """Per structure (``mfjax.strategies.errors.structure_errors``): force MAE (meV/Å) and its
    component count, |ΔE| per atom (meV/atom), id."""
    errors = structure_errors(structures, predict_structures(model, structures, budget=budget, cache=cache))
    return {"forces_mae": 1000.0 * errors["forces_mae_ev_a"], "forces_weight": errors["forces_count"],
            "energy_mae": np.abs(errors["energy_error_mev_atom"]), "structure_id": errors["structure_id"]}


def run_variant(name, overrides, seed, config_path, base, recipes, loaded, parts, budget, cache, log) -> list[dict]:
    """Train one (variant, seed) and evaluate it on every region; writes its npz; returns csv rows."""
    cfg = load_config(config_path, overrides=list(overrides), data=base)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=int(seed)))
    high = recipes["high"]
    hf_train = hf_subset(parts["hf_pool"], float(recipes["hf_fraction"]), int(seed))
    train = parts["lf_train"] + hf_train
    model, _ = initial_model(cfg, dataclasses.replace(loaded, train=train))
    result = fit(model, train, parts["hf_valid"], cfg.train, budget=budget, steps=int(recipes["steps"]), seed=int(seed),
                 select=high, eval_every_steps=int(recipes["eval_every_steps"]), cache=cache,
                 log=log)
    rows, arrays = [], {}
    for region_name, structures in parts["regions"].items():
        metrics = evaluate(result.model, structures, budget=budget, cache=cache)[high]
        for key, value in per_structure_errors(result.model, structures, budget, cache).items():
            arrays[f"{region_name}_{key}"] = value
        forces = metrics.get("forces_mae_ev_a")
        rows.append({
            "variant": name, "seed": seed, "hf_fraction": recipes["hf_fraction"], "n_hf_train": len(hf_train),
            "n_lf_train": len(parts["lf_train"]), "region": region_name, "n_test": len(structures),
            "energy_mae_mev_atom": metrics.get("energy_mae_mev_atom"),
            "forces_mae_mev_a": None if forces is None else 1000.0 * forces,
            "n_params": count_parameters(result.model.variables["params"]), "steps": result.steps,
            "best_step": result.best_step, "seconds": round(result.seconds, 1),
            "compile_seconds": round(result.compile_seconds, 1), "overrides": " ".join(overrides),
        })
    return rows, arrays


def fmt(value, digits: int = 1) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def report(rows: list[dict], out: Path, recipes: dict) -> str:
    """results.md: per region, mean over seeds per variant and the paired difference to plain."""
    regions = list(dict.fromkeys(r["region"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Multi-fidelity recipes: HF ({recipes['high']}) test errors at HF fraction {recipes['hf_fraction']}",
             "", (f"{recipes['steps']} steps per run, seeds {seeds}; force MAE in meV/Å, energy MAE in meV/atom; "
                  "mean over seeds (per-seed values in results.csv)."), ""]
    for region_name in regions:
        lines += [f"## {region_name}", "", "| variant | params | force MAE | energy MAE | Δ force vs plain (95 % CI) |",
                  "|---|---|---|---|---|"]
        for v in variants:
            mine = [r for r in rows if r["variant"] == v and r["region"] == region_name]
            f = np.mean([r["forces_mae_mev_a"] for r in mine if r["forces_mae_mev_a"] is not None] or [np.nan])
            e = np.mean([r["energy_mae_mev_atom"] for r in mine if r["energy_mae_mev_atom"] is not None] or [np.nan])
            lines.append(f"| {v} | {mine[0]['n_params']} | {fmt(f)} | {fmt(e, 2)} | {difference(out, v, region_name, seeds)} |")
        lines.append("")
    return "\n".join(lines)


def difference(out: Path, variant: str, region_name: str, seeds: list[int]) -> str:
    """Paired force-MAE difference variant - plain over (seed, structure), from the npz files."""
    if variant == "plain":
        return "reference"

    def stack(v):
        files = [out / "errors" / f"{v}_seed{s}.npz" for s in seeds]
        if not all(f.exists() for f in files):
            return None, None
        data = [np.load(f) for f in files]
        return np.stack([d[f"{region_name}_forces_mae"] for d in data]), data[0][f"{region_name}_forces_weight"]

    a, w = stack(variant)
    b, _ = stack("plain")
    if a is None or b is None or not np.all(np.isfinite(a)) or w.sum() == 0:
        return "–"
    if stats is None:
        return f"{float(np.mean((a - b) @ w / w.sum())):+.1f}"
    interval = stats.paired_difference(a, b, w, samples=2000, seed=0)
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--quick", action="store_true", help="the recipes.quick settings (a smoke test)")
    parser.add_argument("--variants", help="comma-separated subset of recipes.variants")
    parser.add_argument("--seeds", help="comma-separated seeds (default recipes.seeds)")
    parser.add_argument("--steps", type=int, help="optimiser steps per run (default recipes.steps)")
    parser.add_argument("--output", type=Path, default=None, help="default: results/ beside the config")
    args = parser.parse_args(argv)
    try:
        base, recipes = read_recipes(args.config, args)
        cfg = load_config(args.config, data=base)
        loaded = load_data(cfg.data)
    except (MfjaxError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.output or args.config.resolve().parent / "results"
    (out / "errors").mkdir(parents=True, exist_ok=True)
    parts = split_data(loaded, recipes)
    everything = loaded.train + loaded.valid + loaded.test
    budget = batch_budget(cfg, everything)  # one budget: every run of one variant compiles once
    print(f"LF train {len(parts['lf_train'])}, HF pool {len(parts['hf_pool'])}, HF valid {len(parts['hf_valid'])}, "
          f"HF test regions { {k: len(v) for k, v in parts['regions'].items()} }; budget {budget}", flush=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for name, overrides in recipes["variants"].items():
        cache = StepCache()  # shared by the seeds of a variant
        for seed in recipes["seeds"]:
            try:
                new_rows, arrays = run_variant(name, overrides or [], seed, args.config, base, recipes, loaded, parts,
                                               budget, cache, log=lambda msg: None)
            except MfjaxError as exc:
                print(f"error: variant {name}: {exc}", file=sys.stderr)
                return 2
            np.savez(out / "errors" / f"{name}_seed{seed}.npz", **arrays)
            rows += new_rows
            shown = ", ".join(f"{r['region']} {fmt(r['forces_mae_mev_a'])}" for r in new_rows)
            print(f"{name} seed {seed}: force MAE (meV/Å) {shown}; {new_rows[0]['steps']} steps, best "
                  f"{new_rows[0]['best_step']}, {new_rows[0]['seconds']} s + compile {new_rows[0]['compile_seconds']} s "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
            with open(out / "results.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, CSV_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
    (out / "results.md").write_text(report(rows, out, recipes) + "\n")
    (out / "settings.json").write_text(json.dumps({"recipes": recipes, "config": str(args.config)}, indent=2, default=str))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
