"""``mfjax relax``: relax every structure of a file with a model at one fidelity (ASE optimiser).

A thin shell over :func:`mfjax.materials.relax.relax`: the flags are the keys of
:class:`~mfjax.materials.config.RelaxConfig` (``--cell-filter`` = ``cell_filter``); their values win
over a ``--config relax.yaml`` file, and ``--set key=value`` wins over both. Writes the relaxed
structures with energy, forces, stress, ``relax_converged``, ``relax_steps``, ``relax_fmax`` and
the fidelity to ``--out`` (extxyz), and prints one line per structure and
"N structures, K compilations".
"""

from __future__ import annotations

import argparse
import time

import jax

from mfjax.materials.config import RelaxConfig, load_relax_config
from mfjax.materials.io import read_frames
from mfjax.materials.relax import CalculatorPool, RelaxResult, relax, write_structures
from mfjax.md.cli import TOY_MODEL, load_model
from mfjax.utils.configtools import add_config_flags, given_flags

__all__ = ["add_arguments", "load_cli_model", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"exported model directory ('{TOY_MODEL}': an analytic Lennard-Jones stand-in)")
    parser.add_argument("structures", help="structures to relax (any ASE-readable file; every frame)")
    parser.add_argument("--out", default="relaxed.extxyz", help="relaxed structures, extxyz (default relaxed.extxyz)")
    parser.add_argument("--config", default=None, metavar="FILE", help="relaxation config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a relaxation config key (repeatable; wins over flags and --config)")
    add_config_flags(parser, RelaxConfig)


def config_from_args(args: argparse.Namespace) -> RelaxConfig:
    """The RelaxConfig of ``--config`` + the flags that were given + ``--set``."""
    return load_relax_config(args.config, args.overrides, values=given_flags(args, RelaxConfig))


def load_cli_model(path: str, precision: str):
    """The model at ``path`` (or the LJ stand-in); float64 turns on x64 (the CLI is an application)."""
    if precision == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return load_model(path, precision)


def _line(result: RelaxResult) -> str:
    state = "converged" if result.converged else "NOT converged"
    return (f"{result.name}: {state} in {result.steps} steps, E {result.initial_energy:.6f} -> "
            f"{result.energy:.6f} eV, fmax {result.fmax:.4f} eV/Å")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    model = load_cli_model(args.model, cfg.precision)
    frames = read_frames(args.structures)
    pool = CalculatorPool.for_relax(model, cfg)
    start = time.perf_counter()
    results = relax(model, [f.atoms for f in frames], cfg, names=[f.name for f in frames], pool=pool,
                    progress=lambda r: print(_line(r), flush=True))
    wall = time.perf_counter() - start
    path = write_structures(args.out, [r.atoms for r in results])
    done = sum(r.converged for r in results)
    print(f"{len(results)} structures, {pool.compile_count} compilations ({len(pool.calculators)} padding buckets); "
          f"{done} converged; wall {wall:.1f} s; wrote {path}")
    return 0
