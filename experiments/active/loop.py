"""Active learning on your own pool: select -> label with pyscf -> retrain -> repeat (resumable).

    python experiments/active/loop.py --lf lf_labelled.extxyz --pool pool.extxyz --test hf_test.extxyz \
        --level r2scan/def2-svp --hf r2scan --lf-name pbe --rule disagreement --initial 10 --per-round 10 \
        --rounds 5 --out runs/active

Every round trains a fresh multi-fidelity ensemble (``--ensemble`` members, ``--steps`` steps, the
``--preset`` architecture) on the LF file plus the HF labels so far, records the HF test error in
``OUT/round_NN.json`` and ``OUT/learning_curve.csv``, selects ``--per-round`` pool structures by
``--rule`` (``mfjax select``'s rules) and labels them at ``--level`` with pyscf
(``mfjax.label.runner.label_frames``; the labels accumulate in ``OUT/hf_labels.extxyz``). Rerun the
same command to continue after an interruption: finished rounds and labels are not recomputed.
The initial HF labels are ``--initial`` random pool structures (``--seed``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np

from mfjax.active.loop import make_trainer, pyscf_labels, run_loop
from mfjax.active.rules import RULES
from mfjax.config import TrainConfig
from mfjax.data.batching import run_budget
from mfjax.data.io import read_structures
from mfjax.data.structures import structure_from_atoms
from mfjax.label.levels import parse_level
from mfjax.nn.presets import load_preset


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lf", required=True, help="LF-labelled training structures (extxyz)")
    p.add_argument("--lf-name", default="pbe", help="fidelity name of the LF file")
    p.add_argument("--pool", required=True, help="candidate structures (geometries; labels ignored)")
    p.add_argument("--test", required=True, help="HF-labelled test structures (extxyz)")
    p.add_argument("--level", required=True, help="HF level of theory for pyscf, e.g. r2scan/def2-svp")
    p.add_argument("--hf", default="r2scan", help="fidelity name of the HF labels")
    p.add_argument("--rule", default="disagreement", choices=sorted(RULES))
    p.add_argument("--initial", type=int, default=10)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ensemble", type=int, default=4)
    p.add_argument("--preset", default="small")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--max-graphs", type=int, default=16)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None, **model_overrides) -> list[dict]:
    args = parse(argv)
    out = Path(args.out)
    lf = read_structures(args.lf, fidelity=args.lf_name)
    test = read_structures(args.test, fidelity=args.hf)
    pool = ase.io.read(args.pool, ":")
    species = sorted({int(z) for s in lf + test for z in s.species} | {int(z) for a in pool for z in a.numbers})
    config = load_preset(args.preset, cutoff=args.cutoff, **model_overrides)
    train_cfg = TrainConfig(lr=args.lr, lr_final=args.lr / 20, e0_alpha=1e-6, grad_clip=10.0)
    every = lf + test + [structure_from_atoms(a, args.hf) for a in pool]  # the budget must fit every structure
    budget = run_budget(every, config.cutoff, args.max_graphs, None, None)
    trainer = make_trainer(config, species, (args.lf_name, args.hf), lf, train_cfg, steps=args.steps,
                           ensemble=args.ensemble, budget=budget)
    label = pyscf_labels(pool, [parse_level(args.level)], out / "hf_labels.extxyz", args.hf)
    initial = np.random.default_rng(args.seed).permutation(len(pool))[: args.initial].tolist()
    return run_loop(out, pool=pool, label=label, initial=initial, test=test, train=trainer, rule=args.rule,
                    per_round=args.per_round, rounds=args.rounds, seed=args.seed, hf=args.hf, lf=args.lf_name)


if __name__ == "__main__":
    main()
