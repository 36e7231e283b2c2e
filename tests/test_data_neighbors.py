"""Neighbour lists against ase.neighborlist (periodic images, triclinic, small cells, mixed pbc)."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mfjax.data.neighbors import neighbor_list


def _sets(atoms: ase.Atoms, cutoff: float):
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    reference = sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    ours = sorted(zip(nl.receivers.tolist(), nl.senders.tolist(), map(tuple, nl.shifts.tolist())))
    return reference, ours, nl


TRICLINIC = np.array([[3.1, 0.0, 0.0], [0.9, 2.8, 0.0], [0.4, -0.6, 3.0]])


@pytest.mark.parametrize(
    "name, cell, pbc, cutoff",
    [
        ("triclinic periodic, cell < 2 rc", TRICLINIC, (True, True, True), 5.0),
        ("triclinic periodic, larger cell", TRICLINIC * 3, (True, True, True), 4.0),
        ("mixed pbc (slab)", TRICLINIC, (True, False, True), 4.5),
        ("wire with zero non-periodic vectors", np.diag([3.0, 0.0, 0.0]), (True, False, False), 4.0),
        ("molecule", np.zeros((3, 3)), (False, False, False), 3.0),
    ],
)
def test_neighbor_list_matches_ase(name, cell, pbc, cutoff):
    rng = np.random.default_rng(3)
    frac = rng.uniform(0, 1, (6, 3))
    positions = frac @ TRICLINIC
    atoms = ase.Atoms("H6", positions=positions, cell=cell, pbc=pbc)
    reference, ours, nl = _sets(atoms, cutoff)
    assert len(reference) > 0, name
    assert ours == reference, name
    # edge vectors all shorter than the cutoff, none of zero length
    vectors = atoms.positions[nl.senders] - atoms.positions[nl.receivers] + nl.shifts @ atoms.cell.array
    lengths = np.linalg.norm(vectors, axis=1)
    assert np.all(lengths < cutoff) and np.all(lengths > 0)


def test_self_images_kept_in_small_cell():
    atoms = ase.Atoms("H", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 2.0, pbc=True)
    nl = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 2.5)
    assert len(nl.senders) == 6  # its 6 face images at 2.0 Å; edge images at 2.83 Å are beyond 2.5
    assert np.all(nl.senders == 0) and np.all(np.abs(nl.shifts).sum(axis=1) == 1)


@pytest.mark.parametrize("long_side", [3e3, 1e4])
def test_huge_anisotropic_cells_use_the_fallback(long_side):
    """vesin 0.6 dies (SIGFPE) on such grids; the wrapper must route them elsewhere. Images along
    the long sides are beyond the cutoff, so the result equals the wire (x-periodic only) case."""
    positions = [[0.1, 0.2, 0.3], [1.1, 0.2, 0.3], [0.5, 1.9, 0.3]]
    wire = ase.Atoms("H3", positions=positions, cell=np.diag([3.0, 0.0, 0.0]), pbc=(True, False, False))
    reference, _, _ = _sets(wire, 5.0)
    nl = neighbor_list(np.array(positions), np.diag([3.0, long_side, long_side]), np.ones(3, bool), 5.0)
    ours = sorted(zip(nl.receivers.tolist(), nl.senders.tolist(), map(tuple, nl.shifts.tolist())))
    assert ours == reference and len(ours) > 0


def test_absurd_coordinates_raise_instead_of_crashing():
    with pytest.raises(ValueError, match="beyond"):
        neighbor_list(np.array([[0.0, 0, 0], [1e13, 0, 0]]), np.eye(3) * 3.0, np.ones(3, bool), 5.0)
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(np.array([[0.0, 0, 0], [np.nan, 0, 0]]), np.zeros((3, 3)), np.zeros(3, bool), 5.0)
