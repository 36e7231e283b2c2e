"""MD as a library: ``run_md(model, atoms, MDConfig(...)) -> MDResult``.

``run_md`` checks the model against the structure (fidelity, elements), writes the trajectory
(extxyz or ASE .traj) and the log (time fs, T K, E_pot eV, E_tot eV, pressure GPa) every
``cfg.interval`` steps, checkpoints the run next to the trajectory so that ``cfg.resume`` continues
it after a crash (:mod:`mfjax.md.checkpoint`), judges stability at each saved frame (non-finite
energy, atoms too close, temperature blow-up, NVE energy drift) and fits a diffusion coefficient
when ``cfg.msd_species`` is set. The engines (jax-md or ASE) live in :mod:`mfjax.md.engines`.

With ``cfg.uncertainty_threshold`` (an ensemble model only) every saved frame is also evaluated by
the ensemble: its largest per-atom force std (eV/Å) goes into the frame's info
(``forces_std_max``, ``uncertain``), an extra log column and the progress line; frames above the
threshold are listed in ``MDResult.uncertain_steps`` and, with ``cfg.stop_on_uncertainty``, stop
the run (the failure names the value).

``model`` is any object with ``species``, ``fidelities``, ``fidelity_index(name)``,
``calculator(fidelity=...)`` and what the jax-md energy function needs (``mfjax.load_model`` gives one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ase
import jax
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import Trajectory, write

from mfjax.errors import ConfigError
from mfjax.md.analysis import (
    Diffusion,
    StabilityCriteria,
    check_frame,
    diffusion_from_trajectory,
)
from mfjax.md.checkpoint import (
    Checkpoint,
    checkpoint_path,
    prepare_outputs,
    run_identity,
    save_checkpoint,
)
from mfjax.md.config import MDConfig
from mfjax.md.engines import run_ase, run_jaxmd
from mfjax.md.units import ns_per_day
from mfjax.model.calculator import check_species as check_model_species

__all__ = ["MDResult", "Record", "Reporter", "check_species", "run_md"]

MIN_FRAMES_FOR_DIFFUSION = 5  # the Einstein fit skips the first 20% of the lags


def print_progress(line: str) -> None:
    """The default ``progress``: print and flush (long runs show each frame at once)."""
    print(line, flush=True)


@dataclass
class Record:
    """Saved frames and the stability verdict of a run (filled in by :class:`Reporter`)."""

    frames: list[ase.Atoms] = field(default_factory=list)  # with energy (SinglePointCalculator) and velocities
    failure: str | None = None
    failure_time_fs: float | None = None
    failure_step: int | None = None


@dataclass(frozen=True)
class MDResult:
    """What :func:`run_md` returns.

    frames: the saved frames (every ``interval`` steps, the initial one first; after a resume also
    those read back from the trajectory); failure: why the run was stopped (None = stable for all
    steps); wall_s: seconds of this call incl. compilation; steps_done: steps integrated until the end
    or the failed frame (incl. those before a resume); ns_per_day: the steps of this call over wall_s;
    diffusion: the Einstein fit of ``msd_species`` (None when not asked for, with fewer than 5 frames
    or when the run failed);
    startup_s: set-up and compilation (until the first episode ended, less its steady-state time);
    ns_per_day_after_startup: the rate after that (nan with fewer than two frames after the start);
    start_step: the step this call started from (0, or the checkpoint's on resume);
    uncertain_steps: steps of the frames of this call above ``cfg.uncertainty_threshold``.
    """

    frames: list[ase.Atoms]
    failure: str | None
    failure_time_fs: float | None
    wall_s: float
    steps_done: int
    ns_per_day: float
    diffusion: Diffusion | None = None
    startup_s: float = float("nan")
    ns_per_day_after_startup: float = float("nan")
    start_step: int = 0
    uncertain_steps: tuple[int, ...] = ()

    @property
    def stable(self) -> bool:
        return self.failure is None


class Reporter:
    """Writes trajectory + log, emits progress lines, checks stability for each saved frame and
    writes the checkpoints.

    Engines call ``reporter(atoms, step, e_pot, e_kin, temperature, pressure, min_distance)`` and stop
    when it returns a reason, and ``reporter.checkpoint(step, arrays, meta)`` with their state.
    ``progress`` receives one line per frame unless ``cfg.quiet``. ``resume``: the checkpoint the
    outputs were repaired to (:func:`mfjax.md.checkpoint.prepare_outputs`), ``frames`` the frames
    already written; ``identity``: what the checkpoints record (:func:`mfjax.md.checkpoint.run_identity`);
    ``uncertainty``: atoms -> largest per-atom force std (eV/Å), evaluated at every saved frame when
    ``cfg.uncertainty_threshold`` is set.
    """

    def __init__(self, cfg: MDConfig, n_atoms: int, progress: Callable[[str], None] | None = print_progress,
                 *, resume: Checkpoint | None = None, frames: list[ase.Atoms] | None = None,
                 identity: dict[str, str] | None = None, uncertainty: Callable[[ase.Atoms], float] | None = None):
        self.cfg, self.n_atoms, self.record = cfg, n_atoms, Record(frames=list(frames or []))
        self.uncertainty = uncertainty if cfg.uncertainty_threshold is not None else None
        self.uncertain_steps: list[int] = []
        self.progress = None if cfg.quiet else progress
        self.criteria = StabilityCriteria(cfg.min_distance, cfg.max_temperature_factor, None, cfg.max_drift)
        self.identity = identity or {}
        self.e_tot0: float | None = None
        self.start_step = self.frames_written = self.log_lines = 0
        if resume is not None:
            self.e_tot0, self.start_step = resume.e_tot0, resume.step
            self.frames_written, self.log_lines = resume.frames, resume.log_lines
            self.record.failure, self.record.failure_time_fs = resume.failure, resume.failure_time_fs
            self.record.failure_step = resume.failure_step
        self.t0 = time.perf_counter()
        self.timed: list[tuple[int, float]] = []  # (step, time) of the first and the latest frame after start-up
        mode = "w" if resume is None else "a"
        self.log = open(cfg.log, mode) if cfg.log else None  # noqa: SIM115 (closed by close())
        if self.log and resume is None:
            self.log.write(f"# mfjax md {cfg.ensemble} T={cfg.temperature} K dt={cfg.timestep} fs "
                           f"fidelity={cfg.fidelity}\n")
            extra = " forces_std_max_eV_A uncertain" if self.uncertainty is not None else ""
            self.log.write(f"# time_fs temperature_K e_pot_eV e_tot_eV pressure_GPa{extra}\n")
        self.traj = self.xyz = None
        if cfg.traj and Path(cfg.traj).suffix == ".traj":
            self.traj = Trajectory(cfg.traj, mode)
        elif cfg.traj:
            self.xyz = open(cfg.traj, mode)  # noqa: SIM115
        self.checkpoint_file = checkpoint_path(cfg.traj) if cfg.traj else None

    def __call__(self, atoms: ase.Atoms, step: int, e_pot: float, e_kin: float, temperature: float,
                 pressure: float, min_distance: float) -> str | None:
        cfg = self.cfg
        now = time.perf_counter()
        if step > self.start_step:  # keep the first frame after the start-up, replace the latest
            self.timed = self.timed[:1] + [(step, now)]
        e_tot = e_pot + e_kin
        t_fs = step * cfg.timestep
        snapshot = atoms.copy()
        spread, uncertain, extra = None, False, ""
        if self.uncertainty is not None:
            spread = float(self.uncertainty(snapshot))
            uncertain = not spread <= cfg.uncertainty_threshold  # a non-finite spread counts as uncertain
            snapshot.info.update(forces_std_max=spread, uncertain=uncertain)
            extra = f" {spread:.6f} {int(uncertain)}"
            if uncertain:
                self.uncertain_steps.append(int(step))
        snapshot.calc = SinglePointCalculator(snapshot, energy=e_pot)
        self.record.frames.append(snapshot)
        if self.traj is not None:
            self.traj.write(snapshot)
        elif self.xyz is not None:
            write(self.xyz, snapshot, format="extxyz")
            self.xyz.flush()
        self.frames_written += cfg.traj is not None
        if self.log:
            self.log.write(f"{t_fs:.3f} {temperature:.3f} {e_pot:.6f} {e_tot:.6f} {pressure:.6f}{extra}\n")
            self.log.flush()
            self.log_lines += 1
        if self.e_tot0 is None:
            self.e_tot0 = e_tot
        if self.progress is not None:
            rate = ns_per_day(step - self.start_step, cfg.timestep, now - self.t0) if step > self.start_step else 0.0
            self.progress(f"step {step:>8d}  t {t_fs:10.1f} fs  T {temperature:8.1f} K  E_pot {e_pot:14.6f}  "
                          f"E_tot {e_tot:14.6f}  P {pressure:9.4f} GPa  {rate:8.3f} ns/day"
                          + ("" if spread is None else f"  sigma_F {spread:.4f} eV/A" + ("  UNCERTAIN" if uncertain else "")))
        reason = check_frame(
            e_pot, e_tot, temperature, min_distance, bool(np.all(np.isfinite(atoms.positions))),
            e_tot0=self.e_tot0, target_temperature=cfg.temperature, n_atoms=self.n_atoms,
            nve=cfg.ensemble == "nve", criteria=self.criteria,
        )
        if not reason and uncertain and cfg.stop_on_uncertainty:
            reason = (f"force uncertainty {spread:.4g} eV/Å above md.uncertainty_threshold "
                      f"{cfg.uncertainty_threshold:g} (stop_on_uncertainty)")
        if reason:
            self.record.failure, self.record.failure_time_fs, self.record.failure_step = reason, t_fs, step
        return reason

    def checkpoint(self, step: int, arrays: dict, meta: dict) -> None:
        """Flush + fsync the outputs, then atomically write the checkpoint (no-op without a trajectory)."""
        if self.checkpoint_file is None:
            return
        sizes = []
        for handle in (self.xyz, self.log):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
            sizes.append(os.fstat(handle.fileno()).st_size if handle is not None else -1)
        record = self.record
        save_checkpoint(self.checkpoint_file, Checkpoint(
            step=int(step), frames=self.frames_written, log_lines=self.log_lines, traj_bytes=max(sizes[0], 0),
            log_bytes=sizes[1], e_tot0=self.e_tot0, identity=self.identity, arrays=arrays, meta=meta,
            failure=record.failure, failure_time_fs=record.failure_time_fs, failure_step=record.failure_step,
        ))

    def timing(self) -> tuple[float, float]:
        """(start-up s, ns/day) without compilation: the rate between the first frame after the start
        (the end of the compiling episode) and the latest; start-up = the time until that first frame
        less the steady-state time of its steps. (nan, nan) with fewer than two such frames."""
        if len(self.timed) < 2:
            return float("nan"), float("nan")
        (s1, t1), (s2, t2) = self.timed
        per_step = (t2 - t1) / (s2 - s1)
        startup = max(t1 - self.t0 - (s1 - self.start_step) * per_step, 0.0)
        return startup, ns_per_day(s2 - s1, self.cfg.timestep, t2 - t1)

    def close(self) -> None:
        for handle in (self.log, self.xyz, self.traj):
            if handle is not None:
                handle.close()


def _formula(atoms: ase.Atoms, name: str | None) -> str:
    return f"{name} ({atoms.get_chemical_formula()})" if name else atoms.get_chemical_formula()


def check_species(model, atoms: ase.Atoms, name: str | None = None) -> None:
    """ConfigError naming the structure and its elements that ``model`` does not know."""
    check_model_species(atoms.numbers, model.species, f"structure {_formula(atoms, name)}")


def run_md(model, atoms: ase.Atoms, cfg: MDConfig, *, name: str | None = None,
           progress: Callable[[str], None] | None = print_progress) -> MDResult:
    """Run MD of ``atoms`` (not modified) with ``model`` as ``cfg`` says.

    name: how errors refer to the structure (e.g. its file); progress: receives the per-frame lines
    (None or ``cfg.quiet`` = silent). Raises ConfigError / FidelityError before any step when the
    config, the fidelity, the elements or the precision do not fit.
    """
    cfg.validate()
    model.fidelity_index(cfg.fidelity)  # FidelityError lists the names
    check_species(model, atoms, name)
    if cfg.msd_species is not None and cfg.msd_species not in atoms.get_chemical_symbols():
        raise ConfigError(f"md.msd_species: no {cfg.msd_species} atoms in structure {_formula(atoms, name)}")
    if cfg.precision == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("md.precision float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 or call "
                          "jax.config.update('jax_enable_x64', True) at the start of the program")
    uncertainty = _force_spread(model, cfg) if cfg.uncertainty_threshold is not None else None
    identity = run_identity(cfg, model, atoms) if cfg.traj else {}
    ckpt, frames = prepare_outputs(cfg, identity)
    engine = run_jaxmd if cfg.engine == "jaxmd" else run_ase
    reporter = Reporter(cfg, len(atoms), progress, resume=ckpt, frames=frames, identity=identity,
                        uncertainty=uncertainty)
    if ckpt is not None and reporter.progress is not None:
        reporter.progress(f"resuming {cfg.traj} at step {ckpt.step} ({ckpt.frames} frames)")
    start = time.perf_counter()
    try:
        if ckpt is None or (ckpt.failure is None and ckpt.step < cfg.steps):
            engine(model, atoms, cfg, reporter, reporter.checkpoint, ckpt)
    finally:
        reporter.close()
    wall = time.perf_counter() - start
    record = reporter.record
    steps_done = cfg.steps if record.failure_step is None else record.failure_step
    diffusion = None
    # a failed run's trajectory ends in the failure (atoms collapsing, T blowing up): no transport coefficient
    if cfg.msd_species and record.failure is None and len(record.frames) >= MIN_FRAMES_FOR_DIFFUSION:
        _, _, diffusion = diffusion_from_trajectory(record.frames, cfg.msd_species, cfg.timestep * cfg.interval)
    startup, steady = reporter.timing()
    return MDResult(
        frames=record.frames, failure=record.failure, failure_time_fs=record.failure_time_fs, wall_s=wall,
        steps_done=steps_done, ns_per_day=ns_per_day(max(steps_done - reporter.start_step, 0), cfg.timestep, wall),
        diffusion=diffusion, startup_s=startup, ns_per_day_after_startup=steady, start_step=reporter.start_step,
        uncertain_steps=tuple(reporter.uncertain_steps),
    )


def _force_spread(model, cfg: MDConfig) -> Callable[[ase.Atoms], float]:
    """atoms -> the largest per-atom force std (eV/Å) of an ensemble ``model`` at ``cfg.fidelity``
    (one ASE calculator, compiled once); ConfigError for a model that is not an ensemble."""
    if getattr(model, "ensemble_size", None) is None:
        raise ConfigError("md.uncertainty_threshold needs an ensemble model (train it with train.ensemble: K); "
                          "this model is a single potential")
    calc = model.calculator(fidelity=cfg.fidelity)

    def spread(atoms: ase.Atoms) -> float:
        calc.calculate(atoms, ["forces"])
        return float(np.max(calc.results["forces_std"]))

    return spread
