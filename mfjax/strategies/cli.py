"""``mfjax ablate CONFIG [--hf-fractions ...] [--seeds N] [--strategies ...] [--quick]``.

CONFIG is an mfjax config with an ``ablation:`` section (``mfjax.strategies.settings``); command-line
options override it. A single strategy is ``--strategies transfer --hf-fractions 1.0``. An output
directory with a ``results.csv`` needs ``--resume`` (add the missing rows) or ``--overwrite``.
"""

from __future__ import annotations

import argparse

from mfjax.strategies.ablate import ablate
from mfjax.strategies.settings import load_ablation_config
from mfjax.utils.configtools import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML with an `ablation:` section")
    parser.add_argument("--hf-fractions", default=None, metavar="F1,F2,...",
                        help="fractions of the HF training set (default: the config's, else 0.01,0.03,0.1,0.3,1.0)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="number of seeds (mean ± std over them)")
    parser.add_argument("--strategies", default=None, metavar="S1,S2,...",
                        help="subset of hf_only,transfer,delta,multi_fidelity,multi_fidelity_heads,append")
    parser.add_argument("--quick", action="store_true", help="CI-sized run: the config's ablation.quick overrides")
    parser.add_argument("--output", default=None, metavar="DIR", help="results directory (default: output.dir)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="keep rows of an existing results.csv, run the rest; a killed stage continues from its "
                            "last checkpoint (OUT/stages/); refused when data, split, model, training settings or "
                            "stage budgets changed")
    start.add_argument("--overwrite", action="store_true",
                       help="replace earlier results in the output directory (without it an existing results.csv "
                            "is refused)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set ablation.budget.total_steps=2000 (repeatable)")


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.hf_fractions is not None:
        try:
            fractions = [float(f) for f in _list(args.hf_fractions)]
        except ValueError:
            raise ConfigError(f"--hf-fractions {args.hf_fractions!r}: expected numbers like 0.1,0.3,1.0") from None
        overrides.append(f"ablation.hf_fractions={fractions}")
    if args.seeds is not None:
        overrides.append(f"ablation.seeds={args.seeds}")
    if args.strategies is not None:
        overrides.append(f"ablation.strategies=[{','.join(_list(args.strategies))}]")
    cfg, settings = load_ablation_config(args.config, overrides, quick=args.quick)
    ablate(cfg, settings, args.output or cfg.output.dir, resume=args.resume, overwrite=args.overwrite)
    return 0
