"""NVE, NVT (Langevin, Nosé–Hoover) and NPT (Nosé–Hoover) simulators on a :class:`JaxMDPotential`.

Units (see ``mfjax.md.units``): time fs, energy eV, length Å, masses eV fs²/Å², ``kT`` eV,
pressure eV/Å³. ``Simulator.init(key, R, masses, neighbor)`` and ``Simulator.step(state,
neighbor)`` hide the per-ensemble differences of jax-md's ``init_fn``/``apply_fn`` (the NPT box,
NVE's explicit ``kT``); ``Simulator.box(state)`` is the current box (fixed except for NPT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax_md import simulate

from mfjax.md.jaxmd import JaxMDPotential
from mfjax.md.units import EV_PER_A3_TO_GPA, KB

ENSEMBLES = ("nve", "nvt", "nvt_langevin", "nvt_nose_hoover", "npt")


@dataclass(frozen=True)
class Simulator:
    """A jax-md integrator bound to a potential.

    name: ensemble name; kT: eV; timestep_fs: fs; npt: True when the box is a dynamical variable.
    init_fn/apply_fn: the raw jax-md pair.
    """

    name: str
    potential: JaxMDPotential
    init_fn: Callable
    apply_fn: Callable
    kT: float
    timestep_fs: float
    npt: bool = False

    def init(self, key: jax.Array, R: jax.Array, masses: jax.Array, neighbor: Any, **kwargs):
        """Initial state with Maxwell-Boltzmann momenta at ``kT``; masses [N] eV fs²/Å²."""
        masses = jnp.asarray(masses, R.dtype)
        if self.npt:
            return self.init_fn(key, R, self.potential.box, mass=masses, neighbor=neighbor, **kwargs)
        if self.name == "nve":
            return self.init_fn(key, R, self.kT, mass=masses, neighbor=neighbor, **kwargs)
        return self.init_fn(key, R, mass=masses, neighbor=neighbor, **kwargs)

    def step(self, state, neighbor, **kwargs):
        """One time step (jax-traceable)."""
        return self.apply_fn(state, neighbor=neighbor, **kwargs)

    def box(self, state) -> jax.Array | None:
        """[3, 3] current box (columns = lattice vectors), or None in free space."""
        if self.npt:
            return simulate.npt_box(state)
        return self.potential.box


def make_simulator(
    potential: JaxMDPotential,
    ensemble: str,
    *,
    timestep_fs: float = 1.0,
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    tau_fs: float | None = None,
    pressure_GPa: float = 0.0,
    barostat_tau_fs: float | None = None,
) -> Simulator:
    """A :class:`Simulator` for ``ensemble`` in ``ENSEMBLES`` ("nvt" = Langevin).

    friction_per_fs: Langevin friction (1/fs). tau_fs: Nosé–Hoover thermostat time (default
    100 x timestep). pressure_GPa / barostat_tau_fs (default 1000 x timestep): NPT only; NPT needs
    a periodic potential built with ``fractional=True``.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose from {', '.join(ENSEMBLES)}")
    kT = KB * float(temperature_K)
    dt = float(timestep_fs)
    energy_fn, shift_fn = potential.energy_fn, potential.shift_fn
    if ensemble == "nve":
        init_fn, apply_fn = simulate.nve(energy_fn, shift_fn, dt)
    elif ensemble in ("nvt", "nvt_langevin"):
        init_fn, apply_fn = simulate.nvt_langevin(energy_fn, shift_fn, dt, kT, gamma=friction_per_fs)
    elif ensemble == "nvt_nose_hoover":
        tau = 100.0 * dt if tau_fs is None else tau_fs
        init_fn, apply_fn = simulate.nvt_nose_hoover(energy_fn, shift_fn, dt, kT, tau=tau)
    else:
        if potential.box is None or not potential.fractional:
            raise ValueError("NPT needs a periodic potential with fractional=True")
        pressure = float(pressure_GPa) / EV_PER_A3_TO_GPA
        thermostat = {"tau": 100.0 * dt if tau_fs is None else tau_fs}
        barostat = {"tau": 1000.0 * dt if barostat_tau_fs is None else barostat_tau_fs}
        init_fn, apply_fn = simulate.npt_nose_hoover(
            energy_fn, shift_fn, dt, pressure, kT, barostat_kwargs=barostat, thermostat_kwargs=thermostat
        )
    name = "nvt_langevin" if ensemble == "nvt" else ensemble
    return Simulator(name, potential, init_fn, apply_fn, kT, dt, npt=ensemble == "npt")
