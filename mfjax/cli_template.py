"""``mfjax template [train|md|relax]``: print a complete commented config (training, MD or relaxation)."""

from __future__ import annotations

import argparse

from mfjax.config import config_template
from mfjax.materials.config import relax_config_template
from mfjax.md.config import md_config_template

TEMPLATES = {"train": config_template, "md": md_config_template, "relax": relax_config_template}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="train", choices=list(TEMPLATES),
                        help="which config: train (mfjax train, the default), md (mfjax md --config) or relax (mfjax relax --config)")
    parser.add_argument("--output", "-o", default=None, metavar="FILE", help="write to FILE instead of stdout")


def run(args: argparse.Namespace) -> int:
    text = TEMPLATES[args.kind]()
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    else:
        print(text, end="")
    return 0
