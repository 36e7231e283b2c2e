"""The two MD engines behind ``mfjax md``: jax-md (episode runner) and ASE (calculator + ase.md).

Both call ``reporter(atoms, step, e_pot, e_kin, temperature, pressure, min_distance) -> reason|None``
for the initial frame and every ``args.interval`` steps, and stop when it returns a reason.
"""

from __future__ import annotations

import ase
import jax
import jax.numpy as jnp
import numpy as np

from mfjax.errors import ConfigError
from mfjax.md.units import EV_PER_A3_TO_GPA, KB


def run_jaxmd(model, atoms: ase.Atoms, args, report) -> None:
    """NVE/NVT/NPT with jax-md; periodic cells use fractional coordinates (NPT needs them)."""
    from mfjax.md.integrators import make_simulator
    from mfjax.md.jaxmd import box_from_cell, energy_fn_for
    from mfjax.md.runner import EpisodeRunner
    from mfjax.md.units import masses_for_jaxmd

    pbc = np.asarray(atoms.pbc, bool)
    if pbc.any() and not pbc.all():
        raise ConfigError("the jax-md engine needs a fully periodic cell or a molecule; use --engine ase for slabs")
    periodic = bool(pbc.all())
    if args.ensemble == "npt" and not periodic:
        raise ConfigError("NPT needs a periodic cell")
    dtype = jnp.float64 if args.precision == "float64" else jnp.float32
    pot = energy_fn_for(model, args.fidelity, atoms.numbers, box_from_cell(atoms.cell.array) if periodic else None,
                        fractional=periodic)
    sim = make_simulator(pot, args.ensemble, timestep_fs=args.timestep, temperature_K=args.temperature,
                         friction_per_fs=args.friction, pressure_GPa=args.pressure)
    R = jnp.asarray(atoms.get_scaled_positions(wrap=True) if periodic else atoms.positions, dtype)
    neighbor = pot.neighbor_fn.allocate(R)
    state = sim.init(jax.random.PRNGKey(args.seed), R, masses_for_jaxmd(atoms.numbers), neighbor)
    runner = EpisodeRunner(sim, steps_per_episode=args.interval)

    def callback(frame):
        snap = ase.Atoms(numbers=atoms.numbers, positions=frame.positions, pbc=pbc,
                         cell=frame.box.T if frame.box is not None else None)
        snap.set_velocities(frame.velocities * ase.units.fs)  # Å/fs -> ASE velocity units
        return report(snap, frame.step, frame.e_pot, frame.e_kin, frame.temperature, frame.pressure,
                      frame.min_distance)

    first = runner.frame(state, neighbor, 0)
    if callback(first):
        return
    runner.run(state, neighbor, args.steps, callback=callback, record_initial=False)


class _Stop(Exception):
    pass


def run_ase(model, atoms: ase.Atoms, args, report) -> None:
    """The same ensembles with ase.md and :class:`MfjaxCalculator`."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet
    from ase.neighborlist import neighbor_list

    from mfjax.md.calculator import MfjaxCalculator

    atoms = atoms.copy()
    atoms.calc = MfjaxCalculator(model, fidelity=args.fidelity)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    dt = args.timestep * units.fs
    if args.ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    elif args.ensemble == "nvt":
        dyn = Langevin(atoms, timestep=dt, temperature_K=args.temperature, friction=args.friction / units.fs,
                       rng=np.random.default_rng(args.seed + 1))
    elif args.ensemble == "nvt_nose_hoover":
        dyn = NoseHooverChainNVT(atoms, timestep=dt, temperature_K=args.temperature, tdamp=100 * dt)
    else:
        if not atoms.pbc.all():
            raise ConfigError("NPT needs a periodic cell")
        dyn = IsotropicMTKNPT(atoms, timestep=dt, temperature_K=args.temperature,
                              pressure_au=args.pressure * units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    periodic = bool(atoms.pbc.any())

    def observe():
        e_pot = atoms.get_potential_energy()
        e_kin = atoms.get_kinetic_energy()
        pressure = float("nan")
        if periodic:
            pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3.0 * EV_PER_A3_TO_GPA
        d = neighbor_list("d", atoms, max(2.0 * args.min_distance, 1.0))
        min_d = float(d.min()) if len(d) else float("inf")
        temperature = 2.0 * e_kin / (3 * len(atoms) * KB)
        if report(atoms, dyn.nsteps, e_pot, e_kin, temperature, pressure, min_d):
            raise _Stop

    dyn.attach(observe, interval=args.interval)
    try:
        dyn.run(args.steps)
    except _Stop:
        pass
