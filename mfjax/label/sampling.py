"""Geometry sampling for datasets: thermostatted MD of molecules, rattled/strained crystal cells.

Molecules are sampled by Langevin MD with a cheap calculator (GFN2-xTB through ``tblite`` by
default), taking snapshots at a fixed interval after an equilibration period. Snapshots whose bond
graph differs from the starting structure's (dissociation, proton transfer) are discarded, so every
frame is the same molecule. Crystals are sampled by random symmetric strains of the cell plus Gaussian
displacements of the atoms. All functions take a seed and are deterministic for a given calculator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.neighborlist import natural_cutoffs, neighbor_list


def xtb_calculator(method: str = "GFN2-xTB") -> Calculator:
    """A tblite GFN-xTB ASE calculator (``pip install tblite``)."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("geometry sampling with xTB needs `pip install tblite`") from exc
    return TBLite(method=method, verbosity=0)


def bond_graph(atoms: Atoms, scale: float = 1.2) -> frozenset[tuple[int, int]]:
    """Bonded pairs ``(i, j)``, ``i < j``: distance below ``scale`` times the sum of covalent radii."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=scale))
    return frozenset((int(a), int(b)) for a, b in zip(i, j) if a < b)


def md_snapshots(atoms: Atoms, temperature_K: float, n_frames: int, *,
                 calculator_factory: Callable[[], Calculator] = xtb_calculator,
                 timestep_fs: float = 0.5, interval_steps: int = 40, equilibration_steps: int = 400,
                 friction_per_fs: float = 0.02, seed: int = 0, max_tries: int = 4) -> list[Atoms]:
    """``n_frames`` Langevin-MD snapshots of a molecule at ``temperature_K``.

    Velocities start from a Maxwell-Boltzmann distribution (no net momentum or rotation); snapshots are
    taken every ``interval_steps`` after ``equilibration_steps``. A snapshot whose bond graph differs
    from the input's is skipped; if the trajectory breaks ``max_tries`` times in a row it restarts from
    the input geometry with a new seed. Returned frames carry no calculator and record
    ``info['temperature_K']``.
    """
    reference = bond_graph(atoms)
    rng = np.random.default_rng(seed)
    frames: list[Atoms] = []
    while len(frames) < n_frames:
        work = atoms.copy()
        work.calc = calculator_factory()
        MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
        Stationary(work)
        ZeroRotation(work)
        dyn = Langevin(work, timestep_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, rng=rng)
        dyn.run(equilibration_steps)
        broken = 0
        while len(frames) < n_frames and broken < max_tries:
            dyn.run(interval_steps)
            if bond_graph(work) != reference:
                broken += 1
                continue
            broken = 0
            snap = Atoms(work.numbers, positions=work.positions.copy())
            snap.info.update(atoms.info)
            snap.info["temperature_K"] = float(temperature_K)
            frames.append(snap)
    return frames


def strained_cells(atoms: Atoms, n_frames: int, *, max_strain: float = 0.03, rattle_std: float = 0.05,
                   seed: int = 0) -> list[Atoms]:
    """``n_frames`` copies of a periodic cell with a random symmetric strain and rattled positions.

    Each strain component is uniform in ``[-max_strain, max_strain]`` (applied as ``cell @ (1 + e)``,
    atoms scaled with the cell); each Cartesian position then gets Gaussian noise of ``rattle_std`` Å.
    Frames record ``info['max_strain']`` (the largest |component| used) and ``info['rattle_std']``.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        e = rng.uniform(-max_strain, max_strain, size=(3, 3))
        e = 0.5 * (e + e.T)
        frame = atoms.copy()
        frame.calc = None
        frame.set_cell(atoms.cell[:] @ (np.eye(3) + e), scale_atoms=True)
        frame.positions += rng.normal(0.0, rattle_std, size=frame.positions.shape)
        frame.info["max_strain"] = float(np.abs(e).max())
        frame.info["rattle_std"] = float(rattle_std)
        frames.append(frame)
    return frames
