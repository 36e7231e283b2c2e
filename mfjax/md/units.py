"""Unit conventions of mfjax MD (Å, eV, fs, amu) and their jax-md counterparts.

jax-md integrators are unit-agnostic: they need ``E = m v^2`` to hold in the units given. mfjax runs
them with time in **fs**, energy in eV, length in Å, so masses passed to jax-md are in
``eV fs^2 / Å^2`` (``amu * MASS_AMU``) and momenta in ``eV fs / Å``. Temperatures enter as
``kT = KB * T`` (eV).
"""

from __future__ import annotations

import numpy as np

KB = 8.617333262e-5  # Boltzmann constant, eV/K
MASS_AMU = 103.642691  # 1 amu in eV fs^2 / Å^2  (1.66053907e-27 kg * 1e10 / 1.602176634e-19)
EV_PER_A3_TO_GPA = 160.21766208  # 1 eV/Å^3 in GPa
A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 Å^2/fs in cm^2/s


def masses_for_jaxmd(numbers: np.ndarray) -> np.ndarray:
    """[N] masses in eV fs^2/Å^2 for atomic numbers ``numbers`` [N] (ASE standard masses)."""
    from ase.data import atomic_masses

    return np.asarray(atomic_masses[np.asarray(numbers)], dtype=np.float64) * MASS_AMU


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    """Simulated nanoseconds per wall-clock day."""
    return steps * timestep_fs * 1e-6 / max(seconds, 1e-12) * 86400.0
