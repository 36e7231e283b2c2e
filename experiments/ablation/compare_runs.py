"""Paired differences between one strategy of one ablation run and every strategy of another.

    python experiments/ablation/compare_runs.py RUN_A STRATEGY RUN_B [--seeds 0,1,2] [--fraction 0.1]

Both runs must use the same data, split and seeds (so the same HF subsets and test structures): e.g.
multi_fidelity trained for 10,000 steps against the strategies of the 3000-step run. Prints a
markdown table per region: force MAE difference (meV/Å, weighted by force components) and energy
MAE difference (meV/atom) with 95 % hierarchical bootstrap intervals (mfjax.strategies.stats).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mfjax.strategies.stats import paired_difference, verdict

REGIONS = {"test": "covered", "uncovered_temperature": "uncovered temperature", "composition_gap": "composition gap"}
STRATEGIES = ("hf_only", "transfer", "delta", "multi_fidelity", "multi_fidelity_heads", "append")


def _load(run: Path, strategy: str, fraction: float, seed: int) -> np.lib.npyio.NpzFile:
    return np.load(run / "errors" / f"{strategy}_f{fraction:g}_s{seed}.npz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("strategy")
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    name = f"{args.strategy} ({args.run_a.name})"
    lines = [f"Paired differences: {name} − each strategy of {args.run_b.name}; HF fraction {args.fraction:g}, "
             f"seeds {seeds}; [95 % hierarchical bootstrap interval over seeds and test structures].", ""]
    for region, title in REGIONS.items():
        lines += [f"**{title}**", "", "| a − b | Δ force MAE, meV/Å | verdict | Δ energy MAE, meV/atom | verdict |",
                  "|---|---:|---|---:|---|"]
        for other in STRATEGIES:
            if not all((args.run_b / "errors" / f"{other}_f{args.fraction:g}_s{seed}.npz").exists() for seed in seeds):
                continue  # a strategy RUN_B did not run (e.g. a single-strategy run)
            fa, fb, ea, eb = [], [], [], []
            for seed in seeds:
                a, b = _load(args.run_a, args.strategy, args.fraction, seed), _load(args.run_b, other, args.fraction, seed)
                if list(a[f"{region}__structure_id"]) != list(b[f"{region}__structure_id"]):
                    print(f"error: {region} test structures differ between the runs (seed {seed})", file=sys.stderr)
                    return 2
                weights = a[f"{region}__forces_count"].astype(float)
                fa.append(1000.0 * a[f"{region}__forces_mae_ev_a"])
                fb.append(1000.0 * b[f"{region}__forces_mae_ev_a"])
                ea.append(np.abs(a[f"{region}__energy_error_mev_atom"]))
                eb.append(np.abs(b[f"{region}__energy_error_mev_atom"]))
            f = paired_difference(np.array(fa), np.array(fb), weights, samples=2000, seed=0)
            e = paired_difference(np.array(ea), np.array(eb), None, samples=2000, seed=0)
            lines.append(f"| {args.strategy} − {other} | {f.mean:+.1f} [{f.low:+.1f}, {f.high:+.1f}] | "
                         f"{verdict(f, args.strategy)} | {e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}] | "
                         f"{verdict(e, args.strategy)} |")
        lines.append("")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
