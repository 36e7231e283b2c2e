"""``mfjax md``: molecular dynamics with a trained model at one fidelity (jax-md or ASE engine).

A thin shell over :func:`mfjax.md.simulate.run_md`: the flags are the keys of
:class:`~mfjax.md.config.MDConfig` (``--min-distance`` = ``min_distance``); their values win over a
``--config md.yaml`` file (``mfjax template md`` prints one), and ``--set key=value`` wins over both.
Prints progress, the wall time with the start-up (compilation) time and ns/day measured after it,
the stability verdict (simulated time until the run failed) and, with ``--msd-species``, the
diffusion coefficient of that species (Einstein relation). ``--traj`` is checkpointed
(``<traj>.ckpt.npz``): ``--resume`` continues a killed run from its last checkpoint; an existing
trajectory is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
from ase.io import read

import mfjax
from mfjax.errors import ConfigError
from mfjax.md.config import MDConfig, load_md_config
from mfjax.md.lennard_jones import lennard_jones_model
from mfjax.md.simulate import MIN_FRAMES_FOR_DIFFUSION, MDResult, run_md
from mfjax.utils.configtools import add_config_flags, given_flags

TOY_MODEL = "toy-lj"  # the analytic Lennard-Jones stand-in, for demos and tests


def frame_index(text: str | int) -> int | str:
    """An ASE index: '3' and '-1' become integers, anything else ('last', '0:5') stays a string."""
    return int(text) if isinstance(text, str) and text.lstrip("-").isdigit() else text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"exported model directory ('{TOY_MODEL}': an analytic Lennard-Jones stand-in)")
    parser.add_argument("structure", help="initial structure (any ASE-readable file)")
    parser.add_argument("--config", default=None, metavar="FILE", help="MD config YAML (mfjax template md prints one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an MD config key (repeatable; wins over flags and --config)")
    add_config_flags(parser, MDConfig, converters={"frame": frame_index})


def config_from_args(args: argparse.Namespace) -> MDConfig:
    """The MDConfig of ``--config`` + the flags that were given + ``--set``."""
    return load_md_config(args.config, args.overrides, values=given_flags(args, MDConfig))


def load_model(path: str, precision: str):
    """The exported model at ``path``; 'toy-lj' gives the analytic LJ stand-in (knows every element)."""
    if path == TOY_MODEL:
        return lennard_jones_model({"low": 0.010, "high": 0.012}, sigma=2.2, cutoff=5.0, species=tuple(range(1, 95)))
    return mfjax.load_model(path, precision=precision)


def read_structure(path: str, frame: int | str):
    if not Path(path).exists():
        raise ConfigError(f"structure file {path!r} does not exist")
    atoms = read(path, index=frame_index(frame))
    if isinstance(atoms, list):
        raise ConfigError(f"md.frame {frame!r} selects {len(atoms)} frames of {path}; give one frame")
    return atoms


def print_summary(result: MDResult, cfg: MDConfig) -> None:
    total_fs = cfg.steps * cfg.timestep
    if result.start_step:
        print(f"resumed at step {result.start_step} of {cfg.steps}")
    if not math.isnan(result.ns_per_day_after_startup):
        print(f"wall time {result.wall_s:.1f} s (compile {result.startup_s:.1f} s); "
              f"{result.ns_per_day_after_startup:.3f} ns/day after compilation")
    else:
        print(f"wall time {result.wall_s:.1f} s; {result.ns_per_day:.3f} ns/day incl. compilation "
              "(too few frames to measure without it)")
    if result.failure:
        print(f"stability: FAILED after {result.failure_time_fs:.1f} fs of {total_fs:.1f} fs: {result.failure}")
    else:
        print(f"stability: stable for the full {total_fs:.1f} fs")
    fit = result.diffusion
    if fit is not None:
        print(f"diffusion {cfg.msd_species}: D = {fit.D:.4e} Å²/fs = {fit.D_cm2_s:.4e} cm²/s "
              f"(fit {fit.fit_start_fs:.0f}-{fit.fit_end_fs:.0f} fs)")
    elif cfg.msd_species:
        why = "the run failed" if result.failure else f"fewer than {MIN_FRAMES_FOR_DIFFUSION} frames"
        print(f"diffusion {cfg.msd_species}: not fitted ({why})")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.precision == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)  # the CLI is an application, not library code
    model = load_model(args.model, cfg.precision)
    atoms = read_structure(args.structure, cfg.frame)
    result = run_md(model, atoms, cfg, name=args.structure)
    print_summary(result, cfg)
    return 0

