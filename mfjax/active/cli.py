"""``mfjax select``: choose N structures of a pool to label at the high fidelity.

    mfjax select MODEL POOL.extxyz -n N --rule RULE --out PICKED.extxyz [--hf NAME] [--lf NAME]
                 [--seed S] [--reference LABELLED.extxyz] [--batch-size B]

Writes the chosen frames (geometry, info with structure_id and select_rule / select_score /
select_rank / pool_index) ready for ``mfjax label PICKED.extxyz --level ...``. Usage errors (missing
or unreadable files, N outside 1..pool size, a rule that needs an ensemble) are one line, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io

from mfjax.active.rules import RULES
from mfjax.active.select import default_fidelities, select, write_selection
from mfjax.errors import ConfigError, DataError
from mfjax.model import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported model bundle (an ensemble for disagreement rules)")
    parser.add_argument("pool", help="candidate structures (extxyz or any ASE-readable file; labels optional)")
    parser.add_argument("-n", "--number", type=int, required=True, help="how many structures to choose")
    parser.add_argument("--rule", required=True, choices=sorted(RULES),
                        help="; ".join(f"{k}: {v}" for k, v in RULES.items()))
    parser.add_argument("--out", required=True, help="output extxyz of the chosen structures")
    parser.add_argument("--hf", default=None, help="high fidelity (default: the model's last fidelity)")
    parser.add_argument("--lf", default=None, help="low fidelity for rule delta (default: the model's first other)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random and kmeans++ (default 0)")
    parser.add_argument("--reference", default=None,
                        help="structures already labelled at HF: diversity rules pick far from them too")
    parser.add_argument("--batch-size", type=int, default=16, help="pool structures per model call")


def _read(path: str, what: str) -> list:
    if not Path(path).is_file():
        raise DataError(f"{path}: no such {what} file")
    try:
        frames = ase.io.read(path, ":")
    except Exception as exc:  # noqa: BLE001 (any reader failure is a data error naming the file)
        raise DataError(f"{path}: cannot read {what} structures ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise DataError(f"{path}: the {what} file holds no structures")
    return frames


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load_model(args.model)
    pool = _read(args.pool, "pool")
    reference = _read(args.reference, "reference") if args.reference else []
    if not 1 <= args.number <= len(pool):
        raise ConfigError(f"-n {args.number}: the pool {args.pool} has {len(pool)} structures (need 1 <= N <= {len(pool)})")
    hf, lf = default_fidelities(model, args.hf, args.lf)
    chosen = select(model, pool, args.number, args.rule, hf=hf, lf=lf, seed=args.seed, reference=reference,
                    batch_size=args.batch_size)
    path = write_selection(pool, chosen, args.out, source=Path(args.pool).stem)
    print(f"selected {len(chosen.indices)} of {len(pool)} structures by {args.rule} (HF {hf}"
          f"{', LF ' + lf if lf else ''}) -> {path}")
    return 0
