"""Episode runner: ``lax.fori_loop`` episodes with neighbour-list overflow recovery.

Each episode advances ``steps_per_episode`` steps inside one jitted ``fori_loop`` (the step count
is a traced argument, so a shorter last episode does not recompile), updating the neighbour list
after every step and OR-ing its ``did_buffer_overflow`` flag. On the host, after the episode, an
overflow discards the episode: the list is reallocated at the episode's starting positions (with
more spare capacity on repeated overflows) and the episode is rerun from its starting state.
One :class:`Frame` of observables is recorded per accepted episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.md.integrators import Simulator
from mfjax.md.units import EV_PER_A3_TO_GPA, KB


@dataclass
class Frame:
    """Observables after an accepted episode (host numpy / floats).

    step; time_fs; positions [N, 3] Cartesian Å; velocities [N, 3] Å/fs; box [3, 3] (columns =
    lattice vectors) or None; e_pot, e_kin eV; temperature K; pressure GPa (nan without a box);
    min_distance Å (nearest pair within the cutoff, inf if none).
    """

    step: int
    time_fs: float
    positions: np.ndarray
    velocities: np.ndarray
    box: np.ndarray | None
    e_pot: float
    e_kin: float
    temperature: float
    pressure: float
    min_distance: float

    @property
    def e_tot(self) -> float:
        return self.e_pot + self.e_kin


@dataclass
class RunResult:
    """state, neighbor: final jax-md state and list; frames: one per episode; reallocations: how many
    overflows were recovered; wall_s: seconds spent in episodes; stopped: the reason a callback stopped
    the run early, or None."""

    state: Any
    neighbor: Any
    frames: list[Frame] = field(default_factory=list)
    reallocations: int = 0
    wall_s: float = 0.0
    stopped: str | None = None


class EpisodeRunner:
    """Runs a :class:`Simulator` in episodes (see the module docstring).

    max_retries: reallocations allowed for one episode before giving up (RuntimeError).
    """

    def __init__(self, sim: Simulator, steps_per_episode: int = 100, max_retries: int = 5):
        self.sim = sim
        self.steps_per_episode = int(steps_per_episode)
        self.max_retries = int(max_retries)
        self.compile_count = 0
        pot = sim.potential

        def update(state, nbr):
            box = sim.box(state)
            return nbr.update(state.position, box=box) if sim.npt else nbr.update(state.position)

        def episode(state, nbr, n_steps):
            self.compile_count += 1  # trace-time side effect

            def body(_, carry):
                state, nbr, overflow = carry
                state = sim.step(state, nbr)
                nbr = update(state, nbr)
                return state, nbr, overflow | jnp.asarray(nbr.did_buffer_overflow).astype(bool)

            return jax.lax.fori_loop(0, n_steps, body, (state, nbr, jnp.zeros((), bool)))

        def observe(state, nbr):
            box = sim.box(state)
            kwargs = {"box": box} if box is not None else {}
            e_pot = pot.energy_fn(state.position, neighbor=nbr, **kwargs)
            _, _, vectors, valid, real, _ = pot.edges_fn(state.position, nbr, box)
            dist = jnp.where(valid, jnp.linalg.norm(jnp.where(valid[:, None], vectors, 1.0), axis=-1), jnp.inf)
            mass = state.mass.reshape(-1, 1) if jnp.ndim(state.mass) else state.mass
            vel = state.momentum / mass
            e_kin = 0.5 * jnp.sum(state.momentum * vel)
            pressure = jnp.nan
            if box is not None:
                eye = jnp.eye(3, dtype=real.dtype)
                grad = jax.grad(lambda eps: pot.energy_fn(state.position, neighbor=nbr, box=box, perturbation=eye + eps))
                volume = jnp.abs(jnp.linalg.det(box))
                virial_stress = grad(jnp.zeros((3, 3), real.dtype)) / volume  # ASE sign
                pressure = (2.0 * e_kin / (3.0 * volume) - jnp.trace(virial_stress) / 3.0) * EV_PER_A3_TO_GPA
            dof = 3 * real.shape[0]
            return {
                "positions": real, "velocities": vel, "box": box if box is not None else jnp.zeros(()),
                "e_pot": e_pot, "e_kin": e_kin, "temperature": 2.0 * e_kin / (dof * KB),
                "pressure": pressure, "min_distance": jnp.min(dist),
            }

        self._episode = jax.jit(episode)
        self._observe = jax.jit(observe)

    def allocate(self, state, extra_capacity: int = 0):
        """A fresh neighbour list at ``state``'s positions (and box, for NPT)."""
        kwargs = {"box": self.sim.box(state)} if self.sim.npt else {}
        return self.sim.potential.neighbor_fn.allocate(state.position, extra_capacity=extra_capacity, **kwargs)

    def frame(self, state, nbr, step: int) -> Frame:
        obs = jax.device_get(self._observe(state, nbr))
        return Frame(
            step=step, time_fs=step * self.sim.timestep_fs,
            positions=np.asarray(obs["positions"], np.float64), velocities=np.asarray(obs["velocities"], np.float64),
            box=None if self.sim.box(state) is None else np.asarray(obs["box"], np.float64),
            e_pot=float(obs["e_pot"]), e_kin=float(obs["e_kin"]), temperature=float(obs["temperature"]),
            pressure=float(obs["pressure"]), min_distance=float(obs["min_distance"]),
        )

    def run(
        self, state, neighbor, n_steps: int, *, start_step: int = 0,
        callback: Callable[[Frame], str | None] | None = None, record_initial: bool = True,
    ) -> RunResult:
        """Advance ``n_steps``; ``callback(frame)`` may return a reason string to stop early."""
        result = RunResult(state, neighbor)
        if record_initial:
            result.frames.append(self.frame(state, neighbor, start_step))
        done, t0 = 0, time.perf_counter()
        while done < n_steps:
            k = min(self.steps_per_episode, n_steps - done)
            for attempt in range(self.max_retries + 1):
                new_state, new_nbr, overflow = self._episode(state, neighbor, jnp.asarray(k, jnp.int32))
                if not bool(overflow):
                    break
                result.reallocations += 1
                extra = 0 if attempt == 0 else 2**attempt  # per-atom spare slots on repeated overflows
                neighbor = self.allocate(state, extra_capacity=extra)
            else:
                raise RuntimeError(f"neighbour list still overflows after {self.max_retries} reallocations")
            state, neighbor = new_state, new_nbr
            done += k
            frame = self.frame(state, neighbor, start_step + done)
            result.frames.append(frame)
            reason = callback(frame) if callback is not None else None
            if reason:
                result.stopped = reason
                break
        result.wall_s = time.perf_counter() - t0
        result.state, result.neighbor = state, neighbor
        return result
