"""The MD config: one typed, documented, validated dataclass (``mfjax template md`` prints it).

``run_md(model, atoms, MDConfig(...))`` takes it directly; ``mfjax md`` builds it from an optional
YAML file (``--config md.yaml``), its flags and ``--set key=value`` overrides (:func:`load_md_config`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ase.data import atomic_numbers

from mfjax.errors import ConfigError
from mfjax.utils.configtools import check_choices, load_layered, option, template

__all__ = ["TRAJECTORY_SUFFIXES", "MDConfig", "load_md_config", "md_config_template"]

TRAJECTORY_SUFFIXES = (".extxyz", ".xyz", ".traj")  # .traj = ASE Trajectory, the others extxyz


@dataclass(frozen=True)
class MDConfig:
    """One MD run: ensemble, integration, outputs and when the run counts as failed."""

    fidelity: str | None = option(None, "Fidelity name (required for multi-fidelity models).")
    ensemble: Literal["nve", "nvt", "nvt_nose_hoover", "npt"] = option(
        "nvt", "nve; nvt = Langevin; nvt_nose_hoover; npt = Nosé-Hoover (jax-md) / isotropic MTK (ASE)."
    )
    temperature: float = option(300.0, "Target temperature, K (also the initial Maxwell-Boltzmann velocities).")
    pressure: float = option(0.0, "Target pressure, GPa (npt only).")
    timestep: float = option(1.0, "Time step, fs.")
    steps: int = option(1000, "Number of MD steps.")
    interval: int = option(10, "Steps between saved frames, log lines and stability checks.")
    friction: float = option(0.01, "Langevin friction, 1/fs (nvt only).")
    engine: Literal["jaxmd", "ase"] = option("jaxmd", "jaxmd (compiled episodes) or ase (calculator + ase.md).")
    traj: str | None = option(
        None, "Output trajectory (.extxyz, .xyz or .traj; null = none), relative to the working directory."
    )
    log: str | None = option(None, "Output log: time_fs temperature_K e_pot_eV e_tot_eV pressure_GPa (null = none).")
    seed: int = option(0, "Seed of the initial velocities and the thermostat noise.")
    precision: Literal["float32", "float64"] = option(
        "float32", "Model and integrator precision (float64 needs jax_enable_x64; mfjax md turns it on)."
    )
    min_distance: float = option(0.5, "Å: two atoms closer than this = failed run.")
    max_temperature_factor: float = option(5.0, "A temperature above this factor x the target = failed run.")
    max_drift: float = option(0.05, "eV/atom: total-energy drift above this = failed run (nve only).")
    msd_species: str | None = option(None, "Element symbol whose diffusion coefficient is reported (null = none).")
    uncertainty_threshold: float | None = option(
        None, "eV/Å: flag saved frames whose largest per-atom force std over an ensemble model's members exceeds "
        "this (info uncertain=True in the trajectory, a log column, a progress mark; null = off; needs an ensemble)."
    )
    stop_on_uncertainty: bool = option(
        False, "Stop the run at the first frame above uncertainty_threshold (reported as the run's failure)."
    )
    quiet: bool = option(False, "No per-frame progress lines.")
    frame: int | str = option(0, "Frame of the structure file to start from (ASE index, e.g. 0 or -1).")
    checkpoint_every: int = option(
        10, "Saved frames between crash-safe checkpoints (<traj>.ckpt.npz; also after the first and last frame)."
    )
    resume: bool = option(
        False, "Continue the run of md.traj from its checkpoint (same config; a missing trajectory starts afresh)."
    )
    overwrite: bool = option(False, "Replace an existing md.traj (and its checkpoint) instead of refusing.")

    def validate(self, where: str = "md") -> None:
        """Raise :class:`ConfigError` naming the key of the first impossible value."""

        def key(name: str) -> str:
            return f"{where}.{name}" if where else name

        check_choices(self, where)  # Literal choices also for configs built directly, not from YAML
        positive = {"timestep": self.timestep, "min_distance": self.min_distance,
                    "max_temperature_factor": self.max_temperature_factor, "max_drift": self.max_drift}
        if self.ensemble == "nvt":
            positive["friction"] = self.friction
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key(name)} must be > 0, got {value}")
        for name in ("steps", "interval", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key(name)} must be >= 1, got {getattr(self, name)}")
        if not self.temperature >= 0:
            raise ConfigError(f"{key('temperature')} must be >= 0 K, got {self.temperature}")
        if self.seed < 0:
            raise ConfigError(f"{key('seed')} must be >= 0, got {self.seed}")
        if self.traj is not None and Path(self.traj).suffix not in TRAJECTORY_SUFFIXES:
            raise ConfigError(f"{key('traj')}: {self.traj!r} must end in one of {list(TRAJECTORY_SUFFIXES)}")
        if self.resume and self.overwrite:
            raise ConfigError(f"{key('resume')} and {key('overwrite')} exclude each other")
        if self.resume and self.traj is None:
            raise ConfigError(f"{key('resume')} needs {key('traj')} (the checkpoint is written next to it)")
        if self.uncertainty_threshold is not None and not self.uncertainty_threshold > 0:
            raise ConfigError(f"{key('uncertainty_threshold')} must be > 0 eV/Å or null, got {self.uncertainty_threshold}")
        if self.stop_on_uncertainty and self.uncertainty_threshold is None:
            raise ConfigError(f"{key('stop_on_uncertainty')} needs {key('uncertainty_threshold')} (eV/Å)")
        if self.msd_species is not None and self.msd_species not in atomic_numbers:
            raise ConfigError(f"{key('msd_species')}: {self.msd_species!r} is not an element symbol")


def load_md_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), *, values: dict | None = None
) -> MDConfig:
    """The validated MD config from a YAML file (or the defaults), then ``values`` (e.g. the CLI
    flags that were given), then ``key=value`` ``overrides``. Unknown keys are errors with a suggestion."""
    return load_layered(MDConfig, path, overrides, values)


def md_config_template() -> str:
    """A complete commented MD config (printed by ``mfjax template md``)."""
    header = "# mfjax md config: every key with its default (mfjax md MODEL STRUCTURE --config FILE).\n"
    return header + template(MDConfig) + "\n"
