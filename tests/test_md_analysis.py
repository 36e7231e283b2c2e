"""MSD / diffusion on synthetic random walks with a known D; unwrapping; stability criteria."""

from __future__ import annotations

import ase
import numpy as np
import pytest

from mfjax.md.analysis import (
    StabilityCriteria, check_frame, diffusion_coefficient, diffusion_from_trajectory,
    mean_squared_displacement, unwrap,
)


def random_walk(n_frames=2000, n_atoms=200, D=0.01, dt=2.0, seed=0):
    """Gaussian steps with variance 2 D dt per dimension: MSD = 6 D t exactly in expectation."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=np.sqrt(2 * D * dt), size=(n_frames - 1, n_atoms, 3))
    start = rng.uniform(0, 10, size=(1, n_atoms, 3))
    return np.concatenate([start, start + np.cumsum(steps, axis=0)]), dt


def test_random_walk_diffusion_coefficient():
    positions, dt = random_walk()
    msd = mean_squared_displacement(positions, max_lag=200)
    times = np.arange(len(msd)) * dt
    fit = diffusion_coefficient(times, msd)
    assert fit.D == pytest.approx(0.01, rel=0.05)
    assert fit.D_cm2_s == pytest.approx(0.001, rel=0.05)
    np.testing.assert_allclose(msd[1:] / (6 * 0.01 * times[1:]), 1.0, rtol=0.1)


def test_unwrap_recovers_wrapped_walk():
    positions, dt = random_walk(n_frames=300, n_atoms=20, D=0.05)
    cell = np.array([[8.0, 0.0, 0.0], [2.0, 7.5, 0.0], [1.0, 1.5, 9.0]])  # triclinic
    frac = positions @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    unwrapped = unwrap(wrapped, cell)
    np.testing.assert_allclose(unwrapped - unwrapped[0], positions - positions[0], atol=1e-9)


def test_diffusion_from_trajectory_selects_species():
    positions, dt = random_walk(n_frames=600, n_atoms=40, D=0.02, seed=1)
    positions[:, 20:] = positions[:1, 20:]  # the second species does not move
    cell = np.eye(3) * 10.0
    frames = [
        ase.Atoms(numbers=[3] * 20 + [16] * 20, positions=(p / 10.0 % 1.0) * 10.0, cell=cell, pbc=True)
        for p in positions
    ]
    _, _, li = diffusion_from_trajectory(frames, "Li", dt)
    _, msd_s, s = diffusion_from_trajectory(frames, 16, dt)
    assert li.D == pytest.approx(0.02, rel=0.15)
    assert abs(s.D) < 1e-12 and np.allclose(msd_s, 0.0)
    with pytest.raises(ValueError, match="no atoms"):
        diffusion_from_trajectory(frames, "O", dt)


def test_stability_criteria():
    kw = dict(e_tot0=-10.0, target_temperature=300.0, n_atoms=10, nve=True, criteria=StabilityCriteria())
    assert check_frame(-11.0, -10.0, 310.0, 1.5, True, **kw) is None
    assert "non-finite" in check_frame(np.nan, -10.0, 310.0, 1.5, True, **kw)
    assert "closer" in check_frame(-11.0, -10.0, 310.0, 0.3, True, **kw)
    assert "temperature" in check_frame(-11.0, -10.0, 3000.0, 1.5, True, **kw)
    assert "drift" in check_frame(-11.0, -8.0, 310.0, 1.5, True, **kw)
    assert check_frame(-11.0, -8.0, 310.0, 1.5, True, **{**kw, "nve": False}) is None
