"""Elastic constants, equation of state and lattice constant from strained cells (clamped ions).

The inputs are what a dataset of strained cells holds: per frame a small strain (Voigt 6-vector,
engineering shear: ``[e11, e22, e33, 2 e23, 2 e13, 2 e12]``; :func:`voigt_strain_vector` builds it
from a strain tensor, :func:`strain_from_cells` from a reference and a strained cell) and the
energy (eV) or the stress (Voigt 6, eV/Å^3, ASE sign: positive = tensile) of the strained cell with
its atoms scaled with the cell (no internal relaxation).

* :func:`fit_cubic_elastic`: C11, C12, C44 of a cubic crystal by linear least squares of
  ``stress = s0 + C strain`` over all frames (``s0``: the residual stress of the unstrained
  cell, one free value per component, so the reference cell need not be at zero stress). The
  result is the stress–strain slope at the reference cell: at a cell under pressure it differs
  from the elastic constants at zero pressure.
* :func:`fit_eos`: equilibrium volume, energy and bulk modulus from E(V) (``ase.eos``,
  Birch–Murnaghan by default).
* :func:`zero_stress_strain`: the isotropic strain at which the mean normal stress vanishes (a
  polynomial fit of stress against strain): the lattice constant from stresses alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import units
from ase.eos import EquationOfState

__all__ = ["CubicElastic", "EOSFit", "EV_A3_TO_GPA", "fit_cubic_elastic", "fit_eos", "strain_from_cells",
           "voigt_strain_vector", "zero_stress_strain"]

#: 1 eV/Å^3 in GPa.
EV_A3_TO_GPA = 1.0 / units.GPa
#: Voigt order of the tensor components.
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass(frozen=True)
class CubicElastic:
    """Cubic stress–strain constants in GPa: C11, C12, C44, the bulk modulus (C11 + 2 C12) / 3, the
    fitted residual stress of the unstrained cell (Voigt 6) and the rms residual of the fit."""

    c11: float
    c12: float
    c44: float
    bulk_modulus: float
    residual_stress: tuple[float, ...]
    rms_residual: float
    n_frames: int


@dataclass(frozen=True)
class EOSFit:
    """Equation-of-state fit: volume v0 (Å^3) and energy e0 (eV) of the minimum, bulk modulus (GPa)."""

    v0: float
    e0: float
    bulk_modulus: float
    kind: str


def voigt_strain_vector(strain: np.ndarray) -> np.ndarray:
    """Voigt 6-vector (engineering shear) of a symmetric 3x3 strain tensor."""
    e = np.asarray(strain, np.float64)
    if e.shape != (3, 3):
        raise ValueError(f"a strain tensor is 3x3, got shape {e.shape}")
    e = 0.5 * (e + e.T)
    return np.array([e[i, j] * (1.0 if i == j else 2.0) for i, j in VOIGT_PAIRS])


def strain_from_cells(reference_cell: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Voigt strain (small-strain, engineering shear) that takes ``reference_cell`` to ``cell``
    (row vectors: ``cell = reference_cell @ (1 + e)``, e symmetrised)."""
    ref, new = np.asarray(reference_cell, np.float64), np.asarray(cell, np.float64)
    deformation = np.linalg.solve(ref, new)
    return voigt_strain_vector(deformation - np.eye(3))


def _as_rows(values: Sequence, name: str) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if array.ndim != 2 or array.shape[1] != 6:
        raise ValueError(f"{name}: expected [n, 6] Voigt vectors, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: non-finite values")
    return array


def fit_cubic_elastic(strains: Sequence, stresses: Sequence) -> CubicElastic:
    """C11, C12, C44 (GPa) from Voigt ``strains`` [n, 6] and ``stresses`` [n, 6] (eV/Å^3, ASE sign).

    The frames must determine all three constants (e.g. isotropic or uniaxial strains for C11 and
    C12, a shear for C44, one of them uniaxial); otherwise ``ValueError`` says what is missing.
    """
    e, s = _as_rows(strains, "strains"), _as_rows(stresses, "stresses")
    if len(e) != len(s):
        raise ValueError(f"{len(e)} strains but {len(s)} stresses")
    rows, rhs = [], []
    for strain, stress in zip(e, s):
        for i in range(6):
            row = np.zeros(9)  # [c11, c12, c44, s0_1..s0_6]
            if i < 3:
                row[0] = strain[i]
                row[1] = sum(strain[j] for j in range(3) if j != i)
            else:
                row[2] = strain[i]
            row[3 + i] = 1.0
            rows.append(row)
            rhs.append(stress[i])
    design, target = np.array(rows), np.array(rhs)
    if np.linalg.matrix_rank(design[:, :3], tol=1e-10) < 3 or np.linalg.matrix_rank(design, tol=1e-10) < 9:
        raise ValueError("the strains do not determine C11, C12 and C44: need at least one shear strain "
                         "(Voigt 4-6), one uniaxial strain and two distinct strain magnitudes")
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ solution
    c11, c12, c44 = (float(v * EV_A3_TO_GPA) for v in solution[:3])
    return CubicElastic(c11=c11, c12=c12, c44=c44, bulk_modulus=(c11 + 2.0 * c12) / 3.0,
                        residual_stress=tuple(float(v * EV_A3_TO_GPA) for v in solution[3:]),
                        rms_residual=float(np.sqrt(np.mean(residual**2)) * EV_A3_TO_GPA), n_frames=len(e))


def fit_eos(volumes: Sequence[float], energies: Sequence[float], kind: str = "birchmurnaghan") -> EOSFit:
    """Equation of state E(V) (``ase.eos.EquationOfState``, ``kind`` one of its names) through at
    least 4 distinct volumes (Å^3) and energies (eV); bulk modulus in GPa."""
    v, en = np.asarray(volumes, np.float64), np.asarray(energies, np.float64)
    if v.shape != en.shape or v.ndim != 1:
        raise ValueError(f"volumes and energies must be 1-D of one length, got {v.shape} and {en.shape}")
    if len(np.unique(np.round(v, 8))) < 4 or not np.all(np.isfinite(en)):
        raise ValueError(f"an equation of state needs >= 4 distinct volumes with finite energies, got {len(v)}")
    v0, e0, b = EquationOfState(v, en, eos=kind).fit(warn=False)
    return EOSFit(v0=float(v0), e0=float(e0), bulk_modulus=float(b / units.GPa), kind=kind)


def zero_stress_strain(strains: Sequence[float], stresses: Sequence, degree: int = 2) -> float:
    """Isotropic linear strain at which the mean normal stress vanishes.

    strains: [n] isotropic strains e (cell scaled by 1 + e); stresses: [n, 6] Voigt (or [n] mean
    normal stresses). A polynomial of ``degree`` is fitted to mean stress vs strain; the real root
    closest to the strain range's centre is returned (nan if there is none within twice the range).
    """
    e = np.asarray(strains, np.float64)
    s = np.asarray(stresses, np.float64)
    mean = s[:, :3].mean(axis=1) if s.ndim == 2 else s
    if e.ndim != 1 or mean.shape != e.shape:
        raise ValueError(f"strains [n] and stresses [n, 6] or [n] needed, got {e.shape} and {s.shape}")
    degree = min(int(degree), len(np.unique(e)) - 1)
    if degree < 1:
        raise ValueError("need at least two distinct strains")
    roots = np.roots(np.polyfit(e, mean, degree))
    real = roots[np.abs(roots.imag) < 1e-12].real
    centre, span = 0.5 * (e.min() + e.max()), max(e.max() - e.min(), 1e-12)
    real = real[np.abs(real - centre) <= span]
    return float(real[np.argmin(np.abs(real - centre))]) if len(real) else float("nan")
