"""Checks on input frames: errors raise ``DataError`` naming file, frame and field; warnings are
``DataWarning`` messages with the same naming (emitted by the caller, aggregated per dataset).

Per-label converters (``as_energy``, ``as_forces``, ``as_stress``) turn raw values into the
``Structure`` representation or None (absent = masked, never zero). ``check_structure`` runs the
geometric and identity checks on a built ``Structure``; ``energy_unit_warnings`` and
``find_duplicates`` look at whole datasets.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Collection, Sequence

import numpy as np
from mfjax.data.neighbors import raw_pairs, structure_neighbors
from mfjax.data.structures import Structure
from mfjax.errors import DataError

__all__ = [
    "MIN_DISTANCE", "check_file", "read_error", "as_energy", "as_forces", "as_stress",
    "check_geometry", "check_species", "check_fidelity", "close_pairs", "isolated_atoms",
    "check_structure", "energy_unit_warnings", "find_duplicates", "frame_key",
]

MIN_DISTANCE = 0.1  # Å; closer atoms are an error (overlapping atoms or a unit mistake)
MAX_COORDINATE = 1e5  # Å; larger coordinates or lattice vectors are an error
HARTREE = 27.211386245988  # eV


def check_file(path: str | os.PathLike) -> str:
    """The path as a string if it is an existing readable file, else ``DataError``."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError("file does not exist", source=path)
    if not os.path.isfile(path):
        raise DataError("not a regular file", source=path)
    if not os.access(path, os.R_OK):
        raise DataError("file is not readable (permissions)", source=path)
    if os.path.getsize(path) == 0:
        raise DataError("file is empty", source=path)
    return path


def read_error(exc: BaseException, source: str, frame: int | None) -> DataError:
    """Wrap an exception raised by ase.io while parsing ``frame`` of ``source``."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    special = re.match(r"Got info item (\S+), expecting (special 3x3 matrix)?(.*)", text)
    if special:  # ase.io.extxyz (Lattice, virial) and mfjax.data.io (stress): a wrong-sized info item
        what = "9 numbers (a 3x3 matrix)" if special.group(2) else special.group(3).strip()
        return DataError(f"expected {what}", source=source, frame=frame, field=special.group(1).rstrip(","))
    kind = type(exc).__name__
    return DataError(f"cannot parse the file (truncated or malformed?): {kind}: {text}", source=source, frame=frame)


# ---- labels ------------------------------------------------------------------------------------
def _array(value: Any, source: str, frame: int, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"not numeric ({exc})", source=source, frame=frame, field=field) from None
    if not np.all(np.isfinite(arr)):
        raise DataError("contains NaN or inf", source=source, frame=frame, field=field)
    return arr


def as_energy(value: Any, source: str, frame: int, field: str = "energy") -> float | None:
    """Total energy in eV as a float, or None when absent."""
    if value is None:
        return None
    arr = _array(value, source, frame, field)
    if arr.size != 1:
        raise DataError(f"expected one number, got shape {arr.shape}", source=source, frame=frame, field=field)
    return float(arr.reshape(()))


def as_forces(value: Any, num_atoms: int, source: str, frame: int, field: str = "forces") -> np.ndarray | None:
    """Forces [N, 3] eV/Å, or None when absent."""
    if value is None:
        return None
    arr = _array(value, source, frame, field)
    if arr.shape != (num_atoms, 3):
        raise DataError(
            f"expected shape ({num_atoms}, 3) for {num_atoms} atoms, got {arr.shape}", source=source, frame=frame, field=field
        )
    return arr


def as_stress(value: Any, pbc: np.ndarray, source: str, frame: int, field: str = "stress") -> tuple[np.ndarray | None, str | None]:
    """Stress as 3x3 eV/Å^3 (ASE sign) from Voigt-6 (xx yy zz yz xz xy), 9 values or 3x3.

    Returns (stress or None, warning or None): stress on a frame that is not periodic in all three
    directions is masked (None) with a warning, since it has no volume to normalise by.
    """
    if value is None:
        return None, None
    arr = _array(value, source, frame, field)
    if arr.shape in ((6,), (1, 6)):
        xx, yy, zz, yz, xz, xy = arr.reshape(6)
        arr = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif arr.shape in ((9,), (3, 3), (1, 9), (1, 3, 3)):
        arr = arr.reshape(3, 3)
    else:
        raise DataError(f"expected 6 (Voigt) or 3x3 values, got shape {arr.shape}", source=source, frame=frame, field=field)
    if not np.asarray(pbc, dtype=bool).all():
        return None, "stress given for a frame that is not periodic in 3 directions; masked"
    return arr, None


# ---- geometry and identity ---------------------------------------------------------------------
def check_geometry(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, source: str, frame: int) -> None:
    """Finite positions and cell; periodic lattice vectors independent with positive volume."""
    if not np.all(np.isfinite(positions)):
        raise DataError("contains NaN or inf", source=source, frame=frame, field="positions")
    if not np.all(np.isfinite(cell)):
        raise DataError("contains NaN or inf", source=source, frame=frame, field="cell")
    for name, value in (("positions", positions), ("cell", cell)):
        if np.size(value) and np.abs(value).max() > MAX_COORDINATE:
            raise DataError(f"coordinate beyond {MAX_COORDINATE:g} Å: wrong units or corrupt file?", source=source, frame=frame, field=name)
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return
    vectors = np.asarray(cell, dtype=np.float64)[pbc]
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(norms < 1e-8):
        raise DataError(f"periodic lattice vector of zero length (cell {np.round(cell, 6).tolist()})", source=source, frame=frame, field="cell")
    gram = np.linalg.det(vectors @ vectors.T) / np.prod(norms) ** 2
    if gram < 1e-10:
        raise DataError("periodic lattice vectors are linearly dependent: zero cell volume", source=source, frame=frame, field="cell")
    if pbc.all():
        volume = float(np.linalg.det(cell))
        if volume <= 0.0:
            raise DataError(
                f"cell volume {volume:.6g} Å^3 is negative (left-handed cell): swap two lattice vectors",
                source=source, frame=frame, field="cell",
            )


def check_species(species: np.ndarray, allowed: Collection[int] | None, source: str, frame: int) -> None:
    """Atomic numbers valid (1..118) and, if ``allowed`` is given, in it."""
    species = np.asarray(species)
    bad = species[(species < 1) | (species > 118)]
    if bad.size:
        raise DataError(f"invalid atomic number(s) {sorted(set(bad.tolist()))}", source=source, frame=frame, field="numbers")
    if allowed is not None:
        unknown = sorted(set(species.tolist()) - set(int(z) for z in allowed))
        if unknown:
            from ase.data import chemical_symbols

            names = [f"{chemical_symbols[z]} (Z={z})" for z in unknown]
            known = ", ".join(chemical_symbols[z] for z in sorted(allowed))
            raise DataError(f"element(s) {', '.join(names)} not in the model's species [{known}]", source=source, frame=frame, field="numbers")


def check_fidelity(name: Any, allowed: Sequence[str] | None, source: str, frame: int, key: str = "fidelity") -> str:
    """The fidelity name as a string: present, non-empty and (if given) one of ``allowed``."""
    if name is None or (isinstance(name, str) and not name.strip()):
        raise DataError(
            f"no fidelity: give data.datasets[].fidelity or atoms.info[{key!r}] per frame", source=source, frame=frame, field=key
        )
    if not isinstance(name, (str, int, np.integer)):
        raise DataError(f"fidelity must be a name, got {name!r}", source=source, frame=frame, field=key)
    name = str(name).strip()
    if allowed is not None and name not in allowed:
        raise DataError(f"fidelity {name!r} is not one of {list(allowed)}", source=source, frame=frame, field=key)
    return name


def close_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, rmin: float = MIN_DISTANCE) -> list[tuple[int, int, float]]:
    """Pairs (i, j, d), i <= j, closer than ``rmin`` (periodic images included; an atom's own
    zero-shift pair excluded; coincident distinct atoms included)."""
    i, j, s, d = raw_pairs(positions, cell, pbc, rmin)
    keep = (d < rmin) & (i <= j) & ~((i == j) & np.all(s == 0, axis=1))
    return [(int(a), int(b), float(c)) for a, b, c in zip(i[keep], j[keep], d[keep])]


def isolated_atoms(structure: Structure, cutoff: float) -> np.ndarray:
    """Indices of atoms with no neighbour (any image) within ``cutoff``."""
    nl = structure_neighbors(structure, cutoff)
    return np.flatnonzero(np.bincount(nl.receivers, minlength=structure.num_atoms) == 0)


def check_structure(
    s: Structure,
    *,
    species: Collection[int] | None = None,
    fidelities: Sequence[str] | None = None,
    cutoff: float | None = None,
    min_distance: float = MIN_DISTANCE,
) -> list[tuple[str, str]]:
    """All per-frame checks on a built ``Structure``; returns warnings as (field, message)."""
    check_geometry(s.positions, s.cell, s.pbc, s.source, s.index)
    check_species(s.species, species, s.source, s.index)
    check_fidelity(s.fidelity, fidelities, s.source, s.index)
    if s.num_atoms == 0:
        raise DataError("frame has no atoms", source=s.source, frame=s.index, field="numbers")
    pairs = close_pairs(s.positions, s.cell, s.pbc, min_distance)
    if pairs:
        i, j, d = min(pairs, key=lambda p: p[2])
        what = "an image of itself" if i == j else f"atom {j}"
        raise DataError(
            f"atom {i} is {d:.4f} Å from {what} (minimum {min_distance} Å; {len(pairs)} such pair(s))",
            source=s.source, frame=s.index, field="positions",
        )
    found: list[tuple[str, str]] = []
    if cutoff is not None:
        lonely = isolated_atoms(s, cutoff)
        if lonely.size:
            found.append(("positions", f"atom(s) {lonely[:5].tolist()} have no neighbour within the cutoff {cutoff} Å"))
    return found


# ---- whole-dataset checks ----------------------------------------------------------------------
def atomic_energy_estimate(z: np.ndarray) -> np.ndarray:
    """All-electron ground-state energy of neutral atoms in Hartree (Thomas-Fermi + Scott + Schwinger),
    within ~2 % of Hartree-Fock for Z >= 2: -0.7687 Z^(7/3) + Z^2/2 - 0.2699 Z^(5/3)."""
    z = np.asarray(z, dtype=np.float64)
    return -0.7687 * z ** (7 / 3) + 0.5 * z**2 - 0.2699 * z ** (5 / 3)


# Unit mistakes with a composition-independent fingerprint: an all-electron total energy expressed
# in these units divided by the sum of atomic all-electron energies in Hartree is close to the factor.
_ALL_ELECTRON_UNITS = {"Hartree": 1.0, "kcal/mol": 627.5094740631, "kJ/mol": 2625.4996394799}


def energy_unit_warnings(structures: Sequence[Structure], min_frames: int = 3) -> list[str]:
    """Conservative unit checks on total energies (expected eV); returns warning texts.

    1. ratio r = E / sum_i E_atom(Z_i) (all-electron atomic energies in Hartree) is composition-
       independent for all-electron data: ~27.2 in eV, ~1 in Hartree, ~627.5 in kcal/mol.
       Pseudopotential eV energies give composition-dependent ratios, so only a dataset whose
       frames (90 %) sit within [0.85, 1.3] x a wrong unit's factor is flagged.
    2. |E| larger than 1.5 x the all-electron energy of its atoms in eV is impossible in eV.
    """
    frames = [s for s in structures if s.energy is not None and s.num_atoms > 0]
    if len(frames) < min_frames:
        return []
    ae = np.array([atomic_energy_estimate(s.species).sum() for s in frames])  # Hartree, negative
    energy = np.array([s.energy for s in frames])
    ratio = energy / ae
    out = []
    for unit, factor in _ALL_ELECTRON_UNITS.items():
        inside = (ratio > 0.85 * factor) & (ratio < 1.3 * factor)
        if inside.mean() >= 0.9:
            out.append(
                f"total energies look like all-electron energies in {unit}, not eV (E / sum of atomic "
                f"all-electron energies ~ {np.median(ratio):.3g}; eV would give ~27.2): convert to eV"
            )
    too_big = np.abs(energy) > 1.5 * np.abs(ae) * HARTREE
    if too_big.mean() >= 0.5 and not out:
        out.append(
            f"{int(too_big.sum())} of {len(frames)} energies exceed the all-electron energy of their atoms "
            f"in eV (median {np.median(energy / np.array([s.num_atoms for s in frames])):.4g} per atom): "
            "units are probably not eV"
        )
    return out


def frame_key(s: Structure, decimals: int = 5) -> str:
    """Hash of (fidelity, species, positions, cell, pbc) rounded to ``decimals`` Å."""
    h = hashlib.blake2b(digest_size=16)
    h.update(s.fidelity.encode())
    h.update(np.asarray(s.species, dtype=np.int64).tobytes())
    for a in (s.positions, s.cell):
        h.update((np.round(np.asarray(a, dtype=np.float64), decimals) + 0.0).tobytes())
    h.update(np.asarray(s.pbc, dtype=bool).tobytes())
    return h.hexdigest()


def find_duplicates(a: Sequence[Structure], b: Sequence[Structure]) -> list[tuple[Structure, Structure]]:
    """Pairs (x in a, y in b) with the same fidelity and geometry (leakage across splits)."""
    keys = {}
    for s in a:
        keys.setdefault(frame_key(s), s)
    return [(keys[k], s) for s in b if (k := frame_key(s)) in keys]
