"""The two MD engines behind :func:`mfjax.md.simulate.run_md`: jax-md (episode runner) and ASE
(the model's calculator + ase.md).

Both take an :class:`~mfjax.md.config.MDConfig`, call
``report(atoms, step, e_pot, e_kin, temperature, pressure, min_distance) -> reason | None`` for the
initial frame and every ``cfg.interval`` steps, and stop when it returns a reason.
"""

from __future__ import annotations

from collections.abc import Callable

import ase
import ase.units
import jax
import jax.numpy as jnp
import numpy as np
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list

from mfjax.errors import ConfigError
from mfjax.md.config import MDConfig
from mfjax.md.integrators import make_simulator
from mfjax.md.jaxmd import box_from_cell, energy_fn_for
from mfjax.md.runner import EpisodeRunner
from mfjax.md.units import EV_PER_A3_TO_GPA, KB, masses_for_jaxmd

Report = Callable[..., str | None]  # (atoms, step, e_pot, e_kin, temperature, pressure, min_distance)


def run_jaxmd(model, atoms: ase.Atoms, cfg: MDConfig, report: Report) -> None:
    """NVE/NVT/NPT with jax-md; periodic cells use fractional coordinates (NPT needs them)."""
    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ConfigError("md.engine jaxmd needs a fully periodic cell or a molecule; use engine ase for slabs")
    periodic = bool(pbc.all())
    if cfg.ensemble == "npt" and not periodic:
        raise ConfigError("md.ensemble npt needs a periodic cell")
    dtype = jnp.float64 if cfg.precision == "float64" else jnp.float32
    pot = energy_fn_for(model, cfg.fidelity, atoms.numbers, box_from_cell(atoms.cell.array) if periodic else None,
                        fractional=periodic)
    sim = make_simulator(pot, cfg.ensemble, timestep_fs=cfg.timestep, temperature_K=cfg.temperature,
                         friction_per_fs=cfg.friction, pressure_GPa=cfg.pressure)
    R = jnp.asarray(atoms.get_scaled_positions(wrap=True) if periodic else atoms.positions, dtype)
    neighbor = pot.neighbor_fn.allocate(R)
    state = sim.init(jax.random.PRNGKey(cfg.seed), R, masses_for_jaxmd(atoms.numbers), neighbor)
    runner = EpisodeRunner(sim, steps_per_episode=cfg.interval)

    def callback(frame):
        snap = ase.Atoms(numbers=atoms.numbers, positions=frame.positions, pbc=pbc,
                         cell=frame.box.T if frame.box is not None else None)
        snap.set_velocities(frame.velocities * ase.units.fs)  # Å/fs -> ASE velocity units
        return report(snap, frame.step, frame.e_pot, frame.e_kin, frame.temperature, frame.pressure,
                      frame.min_distance)

    first = runner.frame(state, neighbor, 0)
    if callback(first):
        return
    runner.run(state, neighbor, cfg.steps, callback=callback, record_initial=False)


class _Stop(Exception):
    pass


def run_ase(model, atoms: ase.Atoms, cfg: MDConfig, report: Report) -> None:
    """The same ensembles with ase.md and the model's ASE calculator (``model.calculator``)."""
    atoms = atoms.copy()
    atoms.calc = model.calculator(fidelity=cfg.fidelity)
    MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature, rng=np.random.default_rng(cfg.seed))
    Stationary(atoms)
    dt = cfg.timestep * ase.units.fs
    if cfg.ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    elif cfg.ensemble == "nvt":
        dyn = Langevin(atoms, timestep=dt, temperature_K=cfg.temperature, friction=cfg.friction / ase.units.fs,
                       rng=np.random.default_rng(cfg.seed + 1))
    elif cfg.ensemble == "nvt_nose_hoover":
        dyn = NoseHooverChainNVT(atoms, timestep=dt, temperature_K=cfg.temperature, tdamp=100 * dt)
    else:
        if not atoms.pbc.all():
            raise ConfigError("md.ensemble npt needs a periodic cell")
        dyn = IsotropicMTKNPT(atoms, timestep=dt, temperature_K=cfg.temperature,
                              pressure_au=cfg.pressure * ase.units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    periodic = bool(atoms.pbc.any())

    def observe():
        e_pot = atoms.get_potential_energy()
        e_kin = atoms.get_kinetic_energy()
        pressure = float("nan")
        if periodic:
            pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3.0 * EV_PER_A3_TO_GPA
        d = neighbor_list("d", atoms, max(2.0 * cfg.min_distance, 1.0))
        min_d = float(d.min()) if len(d) else float("inf")
        temperature = 2.0 * e_kin / (3 * len(atoms) * KB)
        if report(atoms, dyn.nsteps, e_pot, e_kin, temperature, pressure, min_d):
            raise _Stop

    dyn.attach(observe, interval=cfg.interval)
    try:
        dyn.run(cfg.steps)
    except _Stop:
        pass
