"""Transport and stability analysis of MD trajectories (host-side numpy).

* :func:`unwrap` turns wrapped periodic positions into continuous ones (frame-to-frame minimum image,
  valid while no atom moves more than half a cell width between saved frames).
* :func:`mean_squared_displacement` averages over atoms of a species and over time origins;
  :func:`diffusion_coefficient` fits the Einstein relation MSD(t) = 2 d D t (d = 3).
* :class:`StabilityCriteria` / :func:`check_frame` decide whether an MD run has failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mfjax.md.units import A2_PER_FS_TO_CM2_PER_S


def unwrap(positions: np.ndarray, cells: np.ndarray | None) -> np.ndarray:
    """[T, N, 3] unwrapped Cartesian positions from wrapped ``positions`` [T, N, 3].

    cells: [T, 3, 3] (rows = lattice vectors; may change, as in NPT) or [3, 3], or None (free space:
    returned unchanged).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if cells is None:
        return positions.copy()
    cells = np.broadcast_to(np.asarray(cells, dtype=np.float64), (positions.shape[0], 3, 3))
    out = np.empty_like(positions)
    out[0] = positions[0]
    for t in range(1, positions.shape[0]):
        step = positions[t] - positions[t - 1]  # [N, 3]
        frac = step @ np.linalg.inv(cells[t])
        frac -= np.round(frac)
        out[t] = out[t - 1] + frac @ cells[t]
    return out


def mean_squared_displacement(
    positions: np.ndarray, indices: Sequence[int] | np.ndarray | None = None, max_lag: int | None = None,
    origin_stride: int = 1,
) -> np.ndarray:
    """[max_lag + 1] MSD (Å²) at lags 0..max_lag frames, averaged over atoms and time origins.

    positions: [T, N, 3] unwrapped; indices: atoms to use (default all); max_lag: default T // 2;
    origin_stride: spacing of time origins (frames).
    """
    x = np.asarray(positions, dtype=np.float64)
    if indices is not None:
        x = x[:, np.asarray(indices)]
    n_frames = x.shape[0]
    max_lag = n_frames // 2 if max_lag is None else int(max_lag)
    if not 0 < max_lag < n_frames:
        raise ValueError(f"max_lag must be in 1..{n_frames - 1}, got {max_lag}")
    msd = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        d = x[lag::origin_stride][: len(x[: n_frames - lag : origin_stride])] - x[: n_frames - lag : origin_stride]
        msd[lag] = np.mean(np.sum(d**2, axis=-1))
    return msd


@dataclass(frozen=True)
class Diffusion:
    """D in Å²/fs (and cm²/s), the fitted slope and intercept of MSD(t), and the fit window (fs)."""

    D: float
    slope: float
    intercept: float
    fit_start_fs: float
    fit_end_fs: float

    @property
    def D_cm2_s(self) -> float:
        return self.D * A2_PER_FS_TO_CM2_PER_S


def diffusion_coefficient(
    times_fs: np.ndarray, msd: np.ndarray, fit_start: float = 0.2, fit_end: float = 1.0, dim: int = 3
) -> Diffusion:
    """Einstein relation: least-squares line through MSD(t) over the fraction [fit_start, fit_end] of
    the lag range (skipping the ballistic start); D = slope / (2 dim)."""
    t, y = np.asarray(times_fs, dtype=np.float64), np.asarray(msd, dtype=np.float64)
    lo, hi = int(fit_start * (len(t) - 1)), max(int(fit_end * (len(t) - 1)), int(fit_start * (len(t) - 1)) + 1)
    slope, intercept = np.polyfit(t[lo : hi + 1], y[lo : hi + 1], 1)
    return Diffusion(float(slope / (2 * dim)), float(slope), float(intercept), float(t[lo]), float(t[hi]))


def diffusion_from_trajectory(
    frames: Sequence, species: int | str, timestep_fs: float, fit_start: float = 0.2, max_lag: int | None = None
) -> tuple[np.ndarray, np.ndarray, Diffusion]:
    """(lag times fs, MSD Å², Diffusion) for the atoms of ``species`` (symbol or Z) in ``frames``
    (a list of ``ase.Atoms``, e.g. ``ase.io.read(path, ":")``), saved every ``timestep_fs``."""
    from ase.data import atomic_numbers

    z = atomic_numbers[species] if isinstance(species, str) else int(species)
    numbers = frames[0].numbers
    indices = np.flatnonzero(numbers == z)
    if len(indices) == 0:
        raise ValueError(f"no atoms of species {species!r} in the trajectory")
    positions = np.stack([a.positions for a in frames])
    cells = np.stack([a.cell.array for a in frames]) if frames[0].pbc.any() else None
    msd = mean_squared_displacement(unwrap(positions, cells), indices, max_lag)
    times = np.arange(len(msd)) * timestep_fs
    return times, msd, diffusion_coefficient(times, msd, fit_start)


@dataclass(frozen=True)
class StabilityCriteria:
    """When a run counts as failed.

    min_distance: Å, atoms closer than this; max_temperature_factor: T above factor x target (or
    above ``max_temperature`` K when given); max_drift: eV/atom, |E_tot - E_tot(0)| in NVE only.
    """

    min_distance: float = 0.5
    max_temperature_factor: float = 5.0
    max_temperature: float | None = None
    max_drift: float = 0.05


def check_frame(
    e_pot: float, e_tot: float, temperature: float, min_distance: float, positions_finite: bool,
    *, e_tot0: float, target_temperature: float, n_atoms: int, nve: bool,
    criteria: StabilityCriteria = StabilityCriteria(),
) -> str | None:
    """The reason the run has failed at this frame, or None if it is still healthy."""
    if not (np.isfinite(e_pot) and np.isfinite(e_tot) and positions_finite):
        return "non-finite energy or positions"
    if min_distance < criteria.min_distance:
        return f"atoms closer than {criteria.min_distance} Å ({min_distance:.3f} Å)"
    t_max = criteria.max_temperature or criteria.max_temperature_factor * max(target_temperature, 1.0)
    if temperature > t_max:
        return f"temperature blow-up ({temperature:.0f} K > {t_max:.0f} K)"
    if nve and abs(e_tot - e_tot0) / n_atoms > criteria.max_drift:
        return f"energy drift {(e_tot - e_tot0) / n_atoms:+.4f} eV/atom exceeds {criteria.max_drift} eV/atom"
    return None
