"""The relaxation config: one typed, documented, validated dataclass.

``relax(model, atoms_list, RelaxConfig(...))`` takes it directly; ``mfjax relax`` builds it from an
optional YAML file (``--config relax.yaml``), its flags and ``--set key=value`` overrides
(:func:`load_relax_config`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from mfjax.errors import ConfigError
from mfjax.utils.configtools import check_choices, load_layered, option, template

__all__ = ["RelaxConfig", "load_relax_config", "relax_config_template", "TRAJECTORY_SUFFIXES"]

TRAJECTORY_SUFFIXES = (".traj", ".extxyz", ".xyz")  # .traj = ASE Trajectory, the others extxyz


@dataclass(frozen=True)
class RelaxConfig:
    """One batch of relaxations: optimiser, cell degrees of freedom, convergence and outputs."""

    fidelity: str | None = option(None, "Fidelity name (required for multi-fidelity models).")
    cell: Literal["fixed", "variable"] = option(
        "fixed", "fixed: positions only; variable: positions and cell (periodic structures only)."
    )
    cell_filter: Literal["frechet", "exp"] = option(
        "frechet", "Cell filter of a variable-cell relaxation: ase.filters.FrechetCellFilter or ExpCellFilter."
    )
    pressure: float = option(0.0, "Hydrostatic pressure, GPa (variable cell only).")
    fmax: float = option(
        0.01, "Converged when every force (and, variable cell, every filter cell force) is below this, eV/Å."
    )
    steps: int = option(500, "Most optimiser steps per structure (not converged after them: relax_converged=False).")
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = option("FIRE", "ASE optimiser.")
    maxstep: float | None = option(None, "Largest step of an atom, Å (null: the optimiser's default).")
    traj: str | None = option(
        None,
        "Per-structure optimisation trajectories (null = none): a directory (files 0000.traj, 0001.traj, ...) "
        "or a file ending in .traj/.extxyz/.xyz (several structures: NAME_0000.traj, ...).",
    )
    precision: Literal["float32", "float64"] = option(
        "float32", "Model precision (float64 needs jax_enable_x64; mfjax relax turns it on)."
    )

    def validate(self, where: str = "relax") -> None:
        """Raise :class:`ConfigError` naming the key of the first impossible value."""

        def key(name: str) -> str:
            return f"{where}.{name}" if where else name

        check_choices(self, where)  # Literal choices also for configs built directly, not from YAML
        if not self.fmax > 0:
            raise ConfigError(f"{key('fmax')} must be > 0 eV/Å, got {self.fmax}")
        if self.steps < 0:
            raise ConfigError(f"{key('steps')} must be >= 0, got {self.steps}")
        if self.maxstep is not None and not self.maxstep > 0:
            raise ConfigError(f"{key('maxstep')} must be > 0 Å, got {self.maxstep}")
        if self.pressure != 0.0 and self.cell != "variable":
            raise ConfigError(f"{key('pressure')} needs {key('cell')}=variable (a fixed cell feels no pressure)")


def load_relax_config(
    path: str | None = None, overrides: typing.Sequence[str] = (), *, values: dict | None = None
) -> RelaxConfig:
    """The validated config from a YAML file (or the defaults), then ``values`` (e.g. the CLI flags
    that were given), then ``key=value`` ``overrides``. Unknown keys are errors with a suggestion."""
    return load_layered(RelaxConfig, path, overrides, values)


def relax_config_template() -> str:
    """A complete commented relaxation config."""
    header = "# mfjax relax config: every key with its default (mfjax relax MODEL STRUCTURES --config FILE).\n"
    return header + template(RelaxConfig) + "\n"
