"""The two MD engines behind :func:`mfjax.md.simulate.run_md`: jax-md (episode runner) and ASE
(the model's calculator + ase.md).

Both take an :class:`~mfjax.md.config.MDConfig`, call
``report(atoms, step, e_pot, e_kin, temperature, pressure, min_distance) -> reason | None`` for the
initial frame and every ``cfg.interval`` steps, and stop when it returns a reason. After the first
frame, every ``cfg.checkpoint_every`` frames and at the end they call ``save(step, arrays, meta)``
with their full state (:mod:`mfjax.md.checkpoint` writes it); given ``resume`` (a checkpoint) they
restore that state instead of drawing velocities and continue from its step without reporting it again.

jax-md: the state pytree (positions, momenta, forces, masses, thermostat chain / barostat, Langevin
RNG key) is stored leaf by leaf and restored into the pytree of a freshly initialised state; the
neighbour list is reallocated at the restored positions. ASE: positions, momenta, cell, the step
count, the integrator's own variables (Nosé-Hoover chain and MTK barostat coordinates, the reference
cell) and the Langevin generator's state.
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
from mfjax.md.checkpoint import Checkpoint
from mfjax.md.config import MDConfig
from mfjax.md.integrators import make_simulator
from mfjax.md.jaxmd import box_from_cell, energy_fn_for
from mfjax.md.runner import EpisodeRunner
from mfjax.md.units import EV_PER_A3_TO_GPA, KB, masses_for_jaxmd

Report = Callable[..., str | None]  # (atoms, step, e_pot, e_kin, temperature, pressure, min_distance)
Save = Callable[[int, dict, dict], None]  # (step, arrays, meta)

# ASE integrator variables that a checkpoint carries: owner ("dyn" or an attribute of it) -> names
ASE_STATE = {"dyn": ("_q", "_p", "_eps", "_p_eps", "_cell0", "_volume0"), "_thermostat": ("_eta", "_p_eta"),
             "_barostat": ("_xi", "_p_xi")}


def _no_save(step: int, arrays: dict, meta: dict) -> None:
    pass


def state_arrays(state) -> dict[str, np.ndarray]:
    """The leaves of a jax-md state pytree as host arrays ``leaf_000``, ``leaf_001``, ..."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(state))
    return {f"leaf_{i:03d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def restore_state(template, arrays: dict[str, np.ndarray]):
    """``template``'s pytree with the leaves of :func:`state_arrays` (ConfigError when they do not fit)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = [arrays.get(f"leaf_{i:03d}") for i in range(len(leaves))]
    if len(arrays) != len(leaves) or any(a is None or np.shape(a) != np.shape(b) for a, b in zip(stored, leaves)):
        raise ConfigError("md.resume: the checkpoint's jax-md state does not fit this run (other structure or "
                          "ensemble?); start again with --overwrite")
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a, dtype=jnp.asarray(b).dtype)
                                                  for a, b in zip(stored, leaves)])


def run_jaxmd(model, atoms: ase.Atoms, cfg: MDConfig, report: Report, save: Save = _no_save,
              resume: Checkpoint | None = None) -> None:
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
    step = 0
    if resume is not None:
        state, step = restore_state(state, resume.arrays), resume.step
        neighbor = runner.allocate(state)

    def callback(frame):
        snap = ase.Atoms(numbers=atoms.numbers, positions=frame.positions, pbc=pbc,
                         cell=frame.box.T if frame.box is not None else None)
        snap.set_velocities(frame.velocities * ase.units.fs)  # Å/fs -> ASE velocity units
        return report(snap, frame.step, frame.e_pot, frame.e_kin, frame.temperature, frame.pressure,
                      frame.min_distance)

    if resume is None:
        stopped = callback(runner.frame(state, neighbor, 0))
        save(0, state_arrays(state), {})
        if stopped:
            return
    chunk = cfg.interval * cfg.checkpoint_every
    while step < cfg.steps:
        n = min(chunk, cfg.steps - step)
        result = runner.run(state, neighbor, n, start_step=step, callback=callback, record_initial=False)
        state, neighbor = result.state, result.neighbor
        step = result.frames[-1].step
        save(step, state_arrays(state), {})
        if result.stopped:
            return


class _Stop(Exception):
    pass


def run_ase(model, atoms: ase.Atoms, cfg: MDConfig, report: Report, save: Save = _no_save,
            resume: Checkpoint | None = None) -> None:
    """The same ensembles with ase.md and the model's ASE calculator (``model.calculator``)."""
    atoms = atoms.copy()
    atoms.calc = model.calculator(fidelity=cfg.fidelity)
    if resume is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature, rng=np.random.default_rng(cfg.seed))
        Stationary(atoms)
    else:
        atoms.set_cell(resume.arrays["cell"], scale_atoms=False)
        atoms.set_positions(resume.arrays["positions"])
        atoms.set_momenta(resume.arrays["momenta"])
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
    start = 0 if resume is None else _restore_ase(dyn, resume)

    def checkpoint():
        arrays, meta = _ase_state(dyn)
        save(dyn.nsteps, arrays, meta)

    def observe():
        e_pot = atoms.get_potential_energy()
        e_kin = atoms.get_kinetic_energy()
        pressure = float("nan")
        if periodic:
            pressure = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3.0 * EV_PER_A3_TO_GPA
        d = neighbor_list("d", atoms, max(2.0 * cfg.min_distance, 1.0))
        min_d = float(d.min()) if len(d) else float("inf")
        temperature = 2.0 * e_kin / (3 * len(atoms) * KB)
        stopped = report(atoms, dyn.nsteps, e_pot, e_kin, temperature, pressure, min_d)
        if stopped or (dyn.nsteps - start) % (cfg.interval * cfg.checkpoint_every) == 0:
            checkpoint()
        if stopped:
            raise _Stop

    dyn.attach(observe, interval=cfg.interval)
    try:
        dyn.run(cfg.steps - start)
    except _Stop:
        return
    if (dyn.nsteps - start) % (cfg.interval * cfg.checkpoint_every):
        checkpoint()  # the last state (a checkpoint was not just written)


def _ase_state(dyn) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of an ASE dynamics: atoms, integrator variables (``ASE_STATE``), step, RNG state."""
    atoms = dyn.atoms
    arrays = {"positions": atoms.get_positions(), "momenta": atoms.get_momenta(), "cell": atoms.cell.array.copy()}
    for owner, names in ASE_STATE.items():
        obj = dyn if owner == "dyn" else getattr(dyn, owner, None)
        for name in names:
            if obj is not None and hasattr(obj, name):
                arrays[f"{owner}.{name}"] = np.array(getattr(obj, name), dtype=np.float64)
    rng = getattr(dyn, "rng", None)
    meta = {"nsteps": int(dyn.nsteps)}
    if isinstance(rng, np.random.Generator):
        meta["rng"] = rng.bit_generator.state
    return arrays, meta


def _restore_ase(dyn, ckpt: Checkpoint) -> int:
    """Put the state of ``ckpt`` into ``dyn`` (built on the restored atoms); returns its step."""
    for key, value in ckpt.arrays.items():
        owner, _, name = key.partition(".")
        if name:
            obj = dyn if owner == "dyn" else getattr(dyn, owner)
            setattr(obj, name, value.item() if value.ndim == 0 else value.copy())
    if "rng" in ckpt.meta:
        dyn.rng.bit_generator.state = ckpt.meta["rng"]
    dyn.nsteps = int(ckpt.meta["nsteps"])
    return dyn.nsteps
