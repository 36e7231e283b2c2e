"""Periodic neighbour lists (host side, numpy) built with vesin.

Handles periodic images, triclinic cells, mixed boundary conditions and cells smaller than
twice the cutoff (an atom may then see several images of the same neighbour, and images of
itself). Edge convention (SPEC §1): for every image of j within ``cutoff`` of i (hard cutoff,
``r < cutoff``) there is one edge j -> i (sender j, receiver i) with shift S such that
``r_ij = R_j - R_i + S @ cell``; the zero-distance self pair is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vesin

from mfjax.data.structures import Structure


@dataclass(frozen=True)
class NeighborList:
    """senders: [E] int32 (j); receivers: [E] int32 (i); shifts: [E, 3] int32 lattice shifts."""

    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray


# vesin's cell list shrinks its grid to at most 1e5 cells keeping the aspect ratio; for strongly
# anisotropic large boxes that rounds a dimension to 0 cells and the process dies (SIGFPE, vesin
# 0.6). Such grids go to a brute-force image search (or ASE's neighbour list when that is too big).
_VESIN_MAX_CELLS = 1e5
_MAX_COORDINATE = 1e6  # Å; beyond this the integer cell indices of the cell lists overflow


def _complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The cell with each non-periodic vector replaced by a unit vector orthogonal to the others."""
    full = np.array(cell, dtype=np.float64)
    for k in np.flatnonzero(~pbc):
        others = full[[m for m in range(3) if m != k]]
        normal = np.cross(others[0], others[1])
        if np.linalg.norm(normal) < 1e-8:  # fewer than two independent vectors: any orthogonal basis
            basis = np.linalg.svd(np.vstack([others, np.zeros(3)]))[2]
            normal = basis[-1] if np.linalg.norm(others) > 0 else np.eye(3)[k]
        full[k] = normal / np.linalg.norm(normal)
    return full


def _vesin_grid_ok(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> bool:
    """False where vesin's grid shrinking could produce a zero-size dimension."""
    if pbc.all():
        a, b, c = cell
        normals = [np.cross(b, c), np.cross(c, a), np.cross(a, b)]
        faces = [abs(np.dot(n / np.linalg.norm(n), v)) for n, v in zip(normals, cell)]
        n = np.array([max(np.trunc(d / cutoff), 1.0) for d in faces])
        if n.prod() <= _VESIN_MAX_CELLS:
            return True
        rxy, ryz = n[0] / n[1], n[1] / n[2]
        n2 = np.trunc(np.cbrt(_VESIN_MAX_CELLS / (rxy * ryz * ryz)))
        n1 = np.trunc(ryz * n2)
        return min(n2, n1, np.trunc(rxy * n1)) >= 1
    # mixed / open boundaries: vesin bounds the points itself; be conservative
    lengths = [np.linalg.norm(cell[k]) if pbc[k] else (np.ptp(positions[:, k]) if len(positions) else 0.0) for k in range(3)]
    return float(np.prod([max(length / cutoff, 1.0) for length in lengths])) <= _VESIN_MAX_CELLS / 2


def _brute_force_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """All (i, j, S, d) with |R_j - R_i + S cell| <= cutoff by enumerating lattice images."""
    full = _complete_cell(cell, pbc)
    frac = positions @ np.linalg.inv(full)
    reach = np.linalg.norm(np.linalg.inv(full).T, axis=1) * cutoff + np.ptp(frac, axis=0)
    ranges = [np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1) if p else np.zeros(1, int) for r, p in zip(reach, pbc)]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    out = []
    for shift in shifts:
        for start in range(0, len(positions), 512):  # row blocks bound the memory to 512 x N
            block = positions[start : start + 512]
            d = np.linalg.norm(positions[None, :, :] - block[:, None, :] + shift @ full, axis=-1)
            i, j = np.nonzero(d <= cutoff)
            out.append((i + start, j, np.broadcast_to(shift, (len(i), 3)), d[i, j]))
    if not out:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3), int), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*out))


def raw_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, shifts, distances) of all ordered pairs within ``cutoff`` (may include the i == j,
    zero-shift pair and r == cutoff) by vesin, or by another search where vesin's grid would fail.
    Raises ``ValueError`` on non-finite or absurdly large (> 1e6 Å) coordinates instead of crashing."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3) if pbc.any() else np.zeros((3, 3))
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(cell))):
        raise ValueError("neighbour list: positions or cell contain NaN or inf")
    if positions.size and max(np.abs(positions).max(), np.abs(cell).max()) > _MAX_COORDINATE:
        raise ValueError(f"neighbour list: coordinates beyond {_MAX_COORDINATE:g} Å")
    if not _vesin_grid_ok(positions, cell, pbc, cutoff):
        return _brute_force_pairs(positions, cell, pbc, cutoff)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, distances = calculator.compute(
        points=positions, box=cell, periodic=pbc.tolist() if pbc.any() else False, quantities="ijSd"
    )
    return np.asarray(i), np.asarray(j), np.asarray(shifts), np.asarray(distances)


#: Number of neighbour lists built by this process (tests check that a run builds one per structure).
BUILDS = {"count": 0}


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> NeighborList:
    """Full (both directions) neighbour list of one structure.

    positions: [N, 3] Å; cell: [3, 3] lattice vectors as rows (ignored where not periodic);
    pbc: [3] bool; cutoff: Å.
    """
    BUILDS["count"] += 1
    i, j, shifts, distances = raw_pairs(positions, cell, pbc, cutoff)
    # vesin uses an inclusive cutoff in some versions; SPEC asks for r < cutoff and no self pair.
    keep = (distances < cutoff) & (distances > 0.0)
    order = np.lexsort((j[keep], i[keep]))
    return NeighborList(
        senders=np.asarray(j, dtype=np.int32)[keep][order],
        receivers=np.asarray(i, dtype=np.int32)[keep][order],
        shifts=np.asarray(shifts, dtype=np.int32)[keep][order],
    )


def structure_neighbors(structure: Structure, cutoff: float) -> NeighborList:
    """The neighbour list of a ``Structure`` at ``cutoff``, built once and cached on the structure.

    Validation, batch budgets, statistics and batchers of a run all call this, so each structure's
    list is computed once per run. The cache is keyed by the cutoff and the positions array itself
    (a structure copied with new positions gets a new list).
    """
    cached = structure.neighbors
    if cached is not None and cached[0] == cutoff and cached[1] is structure.positions:
        return cached[2]
    nl = neighbor_list(structure.positions, structure.cell, structure.pbc, cutoff)
    object.__setattr__(structure, "neighbors", (float(cutoff), structure.positions, nl))
    return nl
