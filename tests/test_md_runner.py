"""The episode runner: forced neighbour-list overflow is recovered by reallocating and rerunning
the episode (same trajectory as a run that never overflowed); NVE conserves energy; NVT/NPT run;
episodes of different length share one compilation."""

from __future__ import annotations

import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_md import dataclasses as jmd_dataclasses

from mfjax.md.integrators import make_simulator
from mfjax.md.jaxmd import box_from_cell, energy_fn_for
from mfjax.md.runner import EpisodeRunner
from mfjax.md.lennard_jones import lennard_jones_model
from mfjax.md.units import masses_for_jaxmd

MODEL = lennard_jones_model({"low": 0.01, "high": 0.02}, sigma=2.2, cutoff=5.0, smooth=True)


def silicon(repeat=(2, 2, 2)):
    return ase.build.bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)


def setup(atoms, ensemble, fractional=False, temperature_K=300.0, **kwargs):
    pot = energy_fn_for(MODEL, "high", atoms.numbers, box_from_cell(atoms.cell.array), fractional=fractional)
    sim = make_simulator(pot, ensemble, timestep_fs=2.0, temperature_K=temperature_K, **kwargs)
    R = jnp.asarray(atoms.get_scaled_positions() if fractional else atoms.positions, jnp.float32)
    nbr = pot.neighbor_fn.allocate(R)
    state = sim.init(jax.random.PRNGKey(0), R, masses_for_jaxmd(atoms.numbers), nbr)
    return pot, sim, R, nbr, state


@pytest.mark.parametrize(
    "repeat,fractional", [((2, 2, 2), False), ((2, 2, 2), True), ((1, 1, 1), True)],
    ids=["minimage-cartesian", "minimage-fractional", "multi-image"],
)
def test_forced_overflow_is_recovered(repeat, fractional):
    atoms = silicon(repeat)
    pot, sim, R, nbr, state = setup(atoms, "nvt", fractional=fractional)
    assert pot.multi_image == (repeat == (1, 1, 1))
    reference = EpisodeRunner(sim, steps_per_episode=10).run(state, nbr, 30)
    assert reference.reallocations == 0
    # the same list with a tiny capacity: its first update overflows
    cap = 16
    tiny = jmd_dataclasses.replace(nbr, idx=tuple(i[:cap] for i in nbr.idx) if pot.multi_image else nbr.idx[:, :cap],
                                   max_occupancy=cap)
    if pot.multi_image:
        tiny = jmd_dataclasses.replace(tiny, shifts=nbr.shifts[:cap])
    runner = EpisodeRunner(sim, steps_per_episode=10)
    result = runner.run(state, tiny, 30)
    assert result.reallocations >= 1
    assert result.neighbor.max_occupancy >= nbr.max_occupancy * 0.9
    np.testing.assert_allclose(result.frames[-1].positions, reference.frames[-1].positions, atol=1e-5)
    assert result.frames[-1].e_pot == pytest.approx(reference.frames[-1].e_pot, rel=1e-5)


def test_nve_conserves_energy_and_compiles_once():
    atoms = silicon()
    _, sim, _, nbr, state = setup(atoms, "nve", temperature_K=600.0)
    runner = EpisodeRunner(sim, steps_per_episode=40)
    result = runner.run(state, nbr, 230)  # last episode shorter: same compiled episode
    assert runner.compile_count == 1
    e_tot = np.array([f.e_tot for f in result.frames])
    assert len(result.frames) == 1 + 6 and result.frames[-1].step == 230
    assert np.ptp(e_tot) / len(atoms) < 2e-4
    assert all(f.min_distance > 1.5 for f in result.frames)


def test_callback_stops_run():
    atoms = silicon()
    _, sim, _, nbr, state = setup(atoms, "nvt")
    result = EpisodeRunner(sim, steps_per_episode=5).run(
        state, nbr, 50, callback=lambda f: "enough" if f.step >= 10 else None
    )
    assert result.stopped == "enough" and result.frames[-1].step == 10


@pytest.mark.parametrize("ensemble", ["nvt", "nvt_nose_hoover", "npt"])
def test_thermostats_hold_temperature(ensemble):
    atoms = silicon()
    _, sim, _, nbr, state = setup(atoms, ensemble, fractional=ensemble == "npt", temperature_K=500.0)
    result = EpisodeRunner(sim, steps_per_episode=50).run(state, nbr, 600)
    temps = np.array([f.temperature for f in result.frames[4:]])
    assert np.all(np.isfinite(temps)) and 150.0 < temps.mean() < 1000.0
    assert np.isfinite(result.frames[-1].pressure)
    if ensemble == "npt":
        volumes = [abs(np.linalg.det(f.box)) for f in result.frames]
        assert np.ptp(volumes) > 0.0
