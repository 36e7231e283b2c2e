"""The ``mfjax`` command: a thin argparse shell over the library.

Each sub-command lives in the module that owns its feature and provides
``add_arguments(parser)`` and ``run(args) -> int``. Errors derived from ``MfjaxError`` (bad data,
bad config) print one line and exit 2; ``--debug`` shows the traceback. JAX's persistent
compilation cache is on for every command (``mfjax.utils.compilation_cache``; opt out with
``MFJAX_NO_COMPILATION_CACHE=1``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mfjax.errors import MfjaxError
from mfjax.utils import compilation_cache

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mfjax.training.cli_train", "train a (multi-fidelity) potential from a YAML config"),
    "evaluate": ("mfjax.training.cli_evaluate", "per-fidelity metrics of an exported model on a data file"),
    "template": ("mfjax.cli_template", "print a complete commented config"),
    "check-data": ("mfjax.data.cli_check", "validate every dataset of a config and print statistics"),
    "label": ("mfjax.label.cli", "label structures with pyscf at named levels of theory"),
    "md": ("mfjax.md.cli", "run molecular dynamics with a trained model (jax-md or ASE)"),
    "ablate": ("mfjax.strategies.cli", "compare multi-fidelity, HF-only, transfer and delta learning"),
    "relax": ("mfjax.materials.cli_relax", "relax structures with a model at one fidelity (ASE optimiser, fixed or variable cell)"),
    "select": ("mfjax.active.cli", "choose N pool structures to label at the high fidelity (ensemble disagreement, HF-LF difference, diversity, random)"),
    "hull": ("mfjax.materials.cli_hull", "energies above the convex hull, formation energies and stability metrics at one fidelity"),
}


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first argument that is one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (lazy dispatch keeps start-up fast)."""
    parser = argparse.ArgumentParser(prog="mfjax", description="Multi-fidelity equivariant MLIPs in JAX.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    compilation_cache.enable()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except MfjaxError as exc:
        if args.debug:
            raise
        print(f"mfjax {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
