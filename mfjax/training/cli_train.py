"""``mfjax train CONFIG.yaml [--set key=value ...] [--resume [--allow-config-change] | --overwrite]``."""

from __future__ import annotations

import argparse

from mfjax.config import load_config
from mfjax.training.loop import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (see `mfjax template`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the run directory's last checkpoint (exact position); refused when the "
                            "data, split, model or loss changed since the run started")
    start.add_argument("--overwrite", action="store_true",
                       help="replace the run in the run directory (its files and checkpoints are removed first)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept changed optimiser settings (lr, schedule, ...; recorded in "
                             "resume_log.jsonl)")
    parser.add_argument("--output", default=None, metavar="DIR", help="run directory (overrides output.dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output.dir={args.output}")
    if args.no_progress:
        overrides.append("output.progress=false")
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, allow_config_change=args.allow_config_change)
    return 130 if result.interrupted else 0
