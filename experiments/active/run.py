"""Active learning evidence: HF test error vs number of HF labels, per selection rule vs random.

Data (shipped): the r2SCAN frames of the covered region (organics_r2scan.extxyz, 300/600 K) are
split once into a fixed HF test set and a pool whose HF labels are withheld and revealed when a rule
selects them; a fixed subset of the covered PBE frames is the LF training data of every model. Each
(rule, seed) runs ``mfjax.active.loop.run_loop``: seed-dependent random initial HF labels, then
``--rounds`` rounds of select ``--per-round`` -> reveal -> retrain a fresh multi-fidelity ensemble
(``--ensemble`` members, ``--steps`` steps; the same for every rule, so equal HF cost means equal
compute). Round files make every run resumable (rerun the same command). Round 0 is the same model
for every rule of a seed (trained once).

Output (``--out``): one directory per rule/seed with round_NN.json and learning_curve.csv, and
results.json / results.md: per rule and HF count, the mean HF force MAE over seeds with a 95 %
hierarchical bootstrap interval (seeds x test structures; ``mfjax.strategies.stats``) and the paired
difference to random on the same seeds and test structures.

    python experiments/active/run.py --out experiments/active/results            # small budget
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np

from mfjax.active.loop import force_errors, make_trainer, run_loop, withheld_labels
from mfjax.config import TrainConfig
from mfjax.data import statistics
from mfjax.data.batching import run_budget
from mfjax.data.structures import Structure, structure_from_atoms
from mfjax.datasets import dataset_path
from mfjax.model import Model, ModelSpec, load_model
from mfjax.nn.presets import load_preset
from mfjax.strategies.stats import hierarchical_bootstrap, paired_difference
from mfjax.training.ensemble import EnsembleStepCache
from mfjax.training.fit import fit
from mfjax.training.setup import example_graph
from mfjax.utils import compilation_cache

RULES = ("random", "disagreement", "delta", "fps", "weighted_fps")


def labelled(atoms, fidelity: str) -> Structure:
    return structure_from_atoms(atoms, fidelity, energy=float(atoms.get_potential_energy()),
                                forces=np.asarray(atoms.get_forces()), structure_id=atoms.info.get("structure_id"))


def load(n_test: int, n_lf: int):
    """(pool atoms, pool HF structures, HF test structures, LF structures): fixed, seed-independent."""
    hf = [a for a in ase.io.read(dataset_path("organics_r2scan"), ":") if a.info.get("region") == "covered"]
    lf = [a for a in ase.io.read(dataset_path("organics_pbe"), ":") if a.info.get("region") == "covered"]
    order = np.random.default_rng(12345).permutation(len(hf))
    test = [labelled(hf[i], "r2scan") for i in order[:n_test]]
    pool_atoms = [hf[i] for i in order[n_test:]]
    pool = [labelled(a, "r2scan") for a in pool_atoms]
    lf_pick = np.random.default_rng(54321).permutation(len(lf))[:n_lf]
    return pool_atoms, pool, test, [labelled(lf[i], "pbe") for i in sorted(lf_pick)]


def summarise(out: Path, rules, seeds, rounds: int) -> dict:
    curves = {}
    for rule in rules:
        for seed in seeds:
            curves[(rule, seed)] = [json.loads((out / f"{rule}_seed{seed}" / f"round_{r:02d}.json").read_text())
                                    for r in range(rounds + 1)]
    results = []
    for rule in rules:
        for r in range(rounds + 1):
            recs = [curves[(rule, s)][r] for s in seeds]
            values = np.array([rec["per_structure_forces_mae"] for rec in recs])
            weights = np.array(recs[0]["weights"])
            row = {"rule": rule, "round": r, "n_hf": recs[0]["n_hf"],
                   "forces_mae": hierarchical_bootstrap(values, weights, seed=r).to_dict(),
                   "energy_mae_mev_atom": float(np.mean([rec["energy_mae_mev_atom"] for rec in recs]))}
            if rule != "random":
                base = np.array([curves[("random", s)][r]["per_structure_forces_mae"] for s in seeds])
                row["minus_random"] = paired_difference(values, base, weights, seed=r).to_dict()
            results.append(row)
    return {"rows": results}


def table(results: dict) -> str:
    lines = ["| rule | HF labels | HF force MAE (meV/Å) [95 % CI] | vs random (meV/Å) [95 % CI] | energy MAE (meV/atom) |",
             "|---|---|---|---|---|"]
    for row in results["rows"]:
        f = row["forces_mae"]
        diff = row.get("minus_random")
        d = "—" if diff is None else (f"{1e3 * diff['mean']:+.1f} [{1e3 * diff['ci_low']:+.1f}, {1e3 * diff['ci_high']:+.1f}]")
        lines.append(f"| {row['rule']} | {row['n_hf']} | {1e3 * f['mean']:.1f} [{1e3 * f['ci_low']:.1f}, "
                     f"{1e3 * f['ci_high']:.1f}] | {d} | {row['energy_mae_mev_atom']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="experiments/active/results")
    p.add_argument("--rules", nargs="+", default=list(RULES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--initial", type=int, default=6, help="random HF labels before round 0")
    p.add_argument("--per-round", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per training")
    p.add_argument("--ensemble", type=int, default=3)
    p.add_argument("--pretrain-steps", type=int, default=400,
                   help="steps of one LF-only model that every ensemble starts from (heads re-drawn; 0 = from scratch)")
    p.add_argument("--n-test", type=int, default=60)
    p.add_argument("--n-lf", type=int, default=120)
    p.add_argument("--model", default="tiny", choices=["tiny", "small"],
                   help="tiny: 1 block, 16x0e+8x1o, lmax 1 (CPU budget); small: the small preset")
    args = p.parse_args()
    compilation_cache.enable()
    t_start = time.perf_counter()
    out = Path(args.out)
    pool_atoms, pool, test, lf = load(args.n_test, args.n_lf)
    overrides = {} if args.model == "small" else {"num_layers": 1, "hidden_irreps": "16x0e+8x1o", "lmax": 1,
                                                  "radial_hidden": [16]}
    config = load_preset("small", cutoff=5.0, **overrides)
    train_cfg = TrainConfig(lr=0.01, lr_final=0.0005, e0_alpha=1e-6, grad_clip=10.0)
    budget = run_budget(lf + pool + test, config.cutoff, 16, None, None)
    cache = EnsembleStepCache()
    species, fids = (1, 6, 7, 8), ("pbe", "r2scan")
    start = None
    if args.pretrain_steps:
        if (out / "pretrained" / "model.json").is_file():
            start = load_model(out / "pretrained")
        else:  # one LF-only model: the shared starting point of every ensemble (exported, reused on rerun)
            e0 = statistics.fit_e0(lf, species, fids, alpha=train_cfg.e0_alpha)
            spec = ModelSpec(config, species, fids, float(statistics.avg_num_neighbors(lf, config.cutoff)))
            model = Model(spec, spec.init(0, example_graph(lf[0], spec), e0=e0, scale=statistics.force_rms(lf)))
            start = fit(model, lf, [], train_cfg, budget=budget, steps=args.pretrain_steps, log=lambda _: None).model
            start.export(out / "pretrained")
    trainer = make_trainer(config, species, fids, lf, train_cfg, steps=args.steps, ensemble=args.ensemble,
                           budget=budget, cache=cache, start=start)
    memo: dict = {}

    def train(hf, seed):  # round 0 is the same for every rule of a seed: train it once
        key = (seed, tuple(s.structure_id for s in hf))
        if key not in memo:
            memo.clear()
            memo[key] = trainer(hf, seed)
        return memo[key]

    def evaluate(model, structures):
        mae, weights, energy = force_errors(model, structures, budget=budget, cache=cache)
        return mae, weights, energy

    for seed in args.seeds:
        initial = np.random.default_rng(seed).permutation(len(pool))[: args.initial].tolist()
        for rule in args.rules:
            run_loop(out / f"{rule}_seed{seed}", pool=pool_atoms, label=withheld_labels(pool), initial=initial,
                     test=test, train=train, rule=rule, per_round=args.per_round, rounds=args.rounds, seed=seed,
                     hf="r2scan", lf="pbe", evaluate=evaluate)
    weights = [3.0 * s.num_atoms for s in test]
    for rule in args.rules:  # the test weights, for the summary (same test set everywhere)
        for seed in args.seeds:
            for path in sorted((out / f"{rule}_seed{seed}").glob("round_*.json")):
                rec = json.loads(path.read_text())
                if "weights" not in rec:
                    rec["weights"] = weights
                    path.write_text(json.dumps(rec))
    results = summarise(out, args.rules, args.seeds, args.rounds)
    results["args"] = vars(args)
    results["wall_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    print(f"wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
