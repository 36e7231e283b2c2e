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


@dataclass(frozen=True)
class NeighborList:
    """senders: [E] int32 (j); receivers: [E] int32 (i); shifts: [E, 3] int32 lattice shifts."""

    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> NeighborList:
    """Full (both directions) neighbour list of one structure.

    positions: [N, 3] Å; cell: [3, 3] lattice vectors as rows (ignored where not periodic);
    pbc: [3] bool; cutoff: Å.
    """
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        cell = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, distances = calculator.compute(
        points=positions, box=cell, periodic=pbc.tolist() if pbc.any() else False, quantities="ijSd"
    )
    # vesin uses an inclusive cutoff in some versions; SPEC asks for r < cutoff and no self pair.
    keep = (distances < cutoff) & (distances > 0.0)
    order = np.lexsort((np.asarray(j)[keep], np.asarray(i)[keep]))
    return NeighborList(
        senders=np.asarray(j, dtype=np.int32)[keep][order],
        receivers=np.asarray(i, dtype=np.int32)[keep][order],
        shifts=np.asarray(shifts, dtype=np.int32)[keep][order],
    )
