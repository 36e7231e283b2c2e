"""``mfjax md``: molecular dynamics with a trained model at one fidelity (jax-md or ASE engine).

Writes a trajectory (extxyz or ASE .traj) and a log (time fs, T K, E_pot eV, E_tot eV, pressure GPa)
every ``--interval`` steps, prints progress with ns/day, and reports stability: the simulated time
until the run failed (non-finite energy, atoms too close, temperature blow-up, NVE energy drift).
``--msd-species`` adds the diffusion coefficient of that species (Einstein relation).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfjax.errors import ConfigError
from mfjax.md.analysis import StabilityCriteria, check_frame, diffusion_from_trajectory
from mfjax.md.units import ns_per_day


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported model directory (or 'toy-lj' for an analytic Lennard-Jones stand-in)")
    parser.add_argument("structure", help="initial structure (any ASE-readable file)")
    parser.add_argument("--frame", default="0", help="frame of STRUCTURE to start from (ASE index, default 0)")
    parser.add_argument("--fidelity", default=None, help="fidelity name (required for multi-fidelity models)")
    parser.add_argument("--ensemble", default="nvt", choices=["nve", "nvt", "nvt_nose_hoover", "npt"],
                        help="nvt = Langevin; npt = Nosé-Hoover (jax-md) / isotropic MTK (ASE)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (also the initial velocities)")
    parser.add_argument("--pressure", type=float, default=0.0, help="GPa (NPT)")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=10, help="steps between saved frames / log lines")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--engine", default="jaxmd", choices=["jaxmd", "ase"])
    parser.add_argument("--traj", default=None, help="output trajectory (.extxyz, .xyz or .traj)")
    parser.add_argument("--log", default=None, help="output log file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"])
    parser.add_argument("--min-distance", type=float, default=0.5, help="Å: closer atoms = failed run")
    parser.add_argument("--max-temperature-factor", type=float, default=5.0, help="T above this x target = failed run")
    parser.add_argument("--max-drift", type=float, default=0.05, help="eV/atom: NVE energy drift = failed run")
    parser.add_argument("--msd-species", default=None, help="report the diffusion coefficient of this element")
    parser.add_argument("--quiet", action="store_true", help="no per-frame progress lines")


def load_model(path: str, precision: str):
    """The exported model at ``path``; 'toy-lj' gives the analytic LJ stand-in (for demos and tests)."""
    if path == "toy-lj":
        from mfjax.md.toy import lennard_jones_model

        return lennard_jones_model({"low": 0.010, "high": 0.012}, sigma=2.2, cutoff=5.0, species=tuple(range(1, 95)))
    import mfjax

    return mfjax.load_model(path, precision=precision)


@dataclass
class Record:
    """Saved frames and the stability verdict of a run."""

    frames: list = field(default_factory=list)  # ase.Atoms with energy (and velocities)
    failure: str | None = None
    failure_time_fs: float | None = None


class Reporter:
    """Writes trajectory + log, prints progress and checks stability for each saved frame."""

    def __init__(self, args, n_atoms: int):
        self.args, self.n_atoms, self.record = args, n_atoms, Record()
        self.criteria = StabilityCriteria(args.min_distance, args.max_temperature_factor, None, args.max_drift)
        self.e_tot0: float | None = None
        self.t0 = time.perf_counter()
        self.log = open(args.log, "w") if args.log else None
        if self.log:
            self.log.write(f"# mfjax md {args.ensemble} T={args.temperature} K dt={args.timestep} fs fidelity={args.fidelity}\n")
            self.log.write("# time_fs temperature_K e_pot_eV e_tot_eV pressure_GPa\n")
        self.traj = None
        if args.traj and Path(args.traj).suffix == ".traj":
            from ase.io import Trajectory

            self.traj = Trajectory(args.traj, "w")
        elif args.traj:
            Path(args.traj).write_text("")

    def __call__(self, atoms, step: int, e_pot: float, e_kin: float, temperature: float, pressure: float,
                 min_distance: float) -> str | None:
        from ase.calculators.singlepoint import SinglePointCalculator

        e_tot = e_pot + e_kin
        t_fs = step * self.args.timestep
        snapshot = atoms.copy()
        snapshot.calc = SinglePointCalculator(snapshot, energy=e_pot)
        self.record.frames.append(snapshot)
        if self.traj is not None:
            self.traj.write(snapshot)
        elif self.args.traj:
            from ase.io import write

            write(self.args.traj, snapshot, format="extxyz", append=True)
        if self.log:
            self.log.write(f"{t_fs:.3f} {temperature:.3f} {e_pot:.6f} {e_tot:.6f} {pressure:.6f}\n")
            self.log.flush()
        if self.e_tot0 is None:
            self.e_tot0 = e_tot
        elapsed = time.perf_counter() - self.t0
        if not self.args.quiet:
            rate = ns_per_day(step, self.args.timestep, elapsed) if step else 0.0
            print(f"step {step:>8d}  t {t_fs:10.1f} fs  T {temperature:8.1f} K  E_pot {e_pot:14.6f}  "
                  f"E_tot {e_tot:14.6f}  P {pressure:9.4f} GPa  {rate:8.3f} ns/day", flush=True)
        reason = check_frame(
            e_pot, e_tot, temperature, min_distance, bool(np.all(np.isfinite(atoms.positions))),
            e_tot0=self.e_tot0, target_temperature=self.args.temperature, n_atoms=self.n_atoms,
            nve=self.args.ensemble == "nve", criteria=self.criteria,
        )
        if reason:
            self.record.failure, self.record.failure_time_fs = reason, t_fs
        return reason

    def close(self) -> None:
        if self.log:
            self.log.close()
        if self.traj is not None:
            self.traj.close()


def run(args) -> int:
    from ase.io import read

    if args.steps < 1 or args.interval < 1 or args.timestep <= 0:
        raise ConfigError("--steps and --interval must be >= 1 and --timestep > 0")
    if args.precision == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # the CLI is an application, not library code
    model = load_model(args.model, args.precision)
    index = int(args.frame) if args.frame.lstrip("-").isdigit() else args.frame
    atoms = read(args.structure, index=index)
    model.fidelity_index(args.fidelity)  # FidelityError lists the names
    reporter = Reporter(args, len(atoms))
    start = time.perf_counter()
    try:
        if args.engine == "jaxmd":
            from mfjax.md.engines import run_jaxmd

            run_jaxmd(model, atoms, args, reporter)
        else:
            from mfjax.md.engines import run_ase

            run_ase(model, atoms, args, reporter)
    finally:
        reporter.close()
    wall = time.perf_counter() - start
    record = reporter.record
    total_fs = args.steps * args.timestep
    print(f"wall time {wall:.1f} s ({ns_per_day(args.steps if not record.failure else 0, args.timestep, wall):.3f} ns/day incl. compilation)")
    if record.failure:
        print(f"stability: FAILED after {record.failure_time_fs:.1f} fs of {total_fs:.1f} fs: {record.failure}")
    else:
        print(f"stability: stable for the full {total_fs:.1f} fs")
    if args.msd_species and len(record.frames) > 4:
        _, _, fit = diffusion_from_trajectory(record.frames, args.msd_species, args.timestep * args.interval)
        print(f"diffusion {args.msd_species}: D = {fit.D:.4e} Å²/fs = {fit.D_cm2_s:.4e} cm²/s "
              f"(fit {fit.fit_start_fs:.0f}-{fit.fit_end_fs:.0f} fs)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from mfjax.cli import main

    sys.exit(main(["md", *sys.argv[1:]]))
