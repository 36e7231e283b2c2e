"""Host-side atomic structures with labels, masks and a fidelity name.

A ``Structure`` is what a file frame becomes after reading and validation; graphs are built
from it. Units: Å, eV, eV/Å, eV/Å^3 with the ASE stress sign (positive = tensile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Structure:
    """One labelled atomic structure.

    species: [N] int, atomic numbers Z.
    positions: [N, 3] float, Å.
    cell: [3, 3] float, lattice vectors as rows, Å (zeros when not periodic).
    pbc: [3] bool.
    fidelity: name of the level of theory of the labels (e.g. "pbe", "r2scan").
    energy: total energy, eV, or None if absent.
    forces: [N, 3] eV/Å or None if absent.
    stress: [3, 3] eV/Å^3 (ASE sign) or None if absent.
    weight: loss weights (energy, forces, stress) of this structure's dataset.
    source: file the frame came from; index: frame index in that file.
    structure_id: identifier shared by the same geometry labelled at several fidelities, if known.
    info: any further per-frame metadata (region, temperature, ...).
    """

    species: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    fidelity: str
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    weight: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source: str = "<memory>"
    index: int = 0
    structure_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: (cutoff, positions, NeighborList) cached by ``mfjax.data.neighbors.structure_neighbors``.
    neighbors: Any = field(default=None, compare=False, repr=False)

    @property
    def num_atoms(self) -> int:
        return int(self.species.shape[0])

    @property
    def where(self) -> str:
        """Human-readable location used in error messages: 'file, frame k'."""
        return f"{self.source}, frame {self.index}"

    def to_atoms(self):
        """The structure as an ``ase.Atoms`` with a SinglePointCalculator holding present labels."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.species, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        atoms.info["fidelity"] = self.fidelity
        if self.structure_id is not None:
            atoms.info["structure_id"] = self.structure_id
        results = {}
        if self.energy is not None:
            results["energy"] = float(self.energy)
        if self.forces is not None:
            results["forces"] = np.asarray(self.forces)
        if self.stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(self.stress))
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


def structure_from_atoms(atoms, fidelity: str, **kwargs) -> Structure:
    """A label-free ``Structure`` from an ``ase.Atoms`` (for inference); kwargs go to Structure."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    return Structure(
        species=np.asarray(atoms.numbers, dtype=np.int32),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=cell,
        pbc=pbc,
        fidelity=fidelity,
        **kwargs,
    )
