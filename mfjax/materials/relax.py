"""Geometry relaxation of many structures with an ASE optimiser and one calculator per padding bucket.

``relax(model, atoms_list, RelaxConfig(...))`` relaxes each structure (positions, or positions and
cell through ``ase.filters.FrechetCellFilter`` / ``ExpCellFilter`` with an optional hydrostatic
pressure) and returns one :class:`RelaxResult` per structure, in input order. ``single_points``
evaluates structures as they are. Both draw calculators from a :class:`CalculatorPool`: structures
are grouped into padding buckets (periodic or not, edge count rounded up to a power of two) and
each bucket keeps one ``model.calculator(fidelity)``, whose capacities only grow. Each bucket is
visited from its largest structure down, so a batch of similar structures compiles about once per
bucket; ``pool.compile_count`` reports the number.

``model`` is a ``mfjax.model.Model`` or anything on the same protocol with a ``calculator``
(e.g. the Lennard-Jones oracle ``mfjax.md.lennard_jones.lennard_jones_model``).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import ExpCellFilter, FrechetCellFilter
from ase.io.trajectory import Trajectory
from ase.optimize import BFGS, FIRE, LBFGS

from mfjax.data.batching import power_of_two
from mfjax.data.neighbors import neighbor_list
from mfjax.errors import ConfigError
from mfjax.materials.config import TRAJECTORY_SUFFIXES, RelaxConfig
from mfjax.model.calculator import check_species

__all__ = ["CalculatorPool", "RelaxResult", "relax", "single_points", "write_structures", "trajectory_path"]

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}
FILTERS = {"frechet": FrechetCellFilter, "exp": ExpCellFilter}
LABEL_KEYS = ("energy", "free_energy", "stress", "forces")  # stale labels dropped from info/arrays


@dataclass(frozen=True)
class RelaxResult:
    """One relaxed structure.

    atoms: the relaxed structure with a SinglePointCalculator (energy eV, forces eV/Å, stress
        eV/Å^3 ASE sign for periodic cells) and ``info`` relax_converged, relax_steps, relax_fmax,
        fidelity. converged: the largest force fell below ``fmax`` within ``steps``.
    steps: optimiser steps taken. fmax: the final largest (filter) force, eV/Å.
    initial_energy / energy: before and after, eV. name: the structure's label in messages.
    trajectory: the file of this structure's optimisation trajectory, if one was written.
    """

    atoms: Atoms
    converged: bool
    steps: int
    fmax: float
    initial_energy: float
    energy: float
    name: str
    trajectory: Path | None = None


class CalculatorPool:
    """One calculator at ``fidelity`` per padding bucket (see the module docstring).

    ``plan(atoms_list)`` gives the visiting order with each structure's bucket (bucket by bucket,
    largest structure first); ``calculator(bucket)`` the bucket's calculator; ``compile_count`` the
    compilations so far.
    """

    def __init__(self, model: Any, fidelity: str | None = None, *, initial_margin: float = 0.05,
                 capacity_factor: float = 1.25):
        self.model = model
        self.fidelity = model.fidelities[model.fidelity_index(fidelity)]  # FidelityError lists the names
        self.calculators: dict[tuple[bool, int], Any] = {}
        self._options = {"initial_margin": initial_margin, "capacity_factor": capacity_factor}

    @classmethod
    def for_relax(cls, model: Any, cfg: RelaxConfig) -> "CalculatorPool":
        """The pool for ``cfg``: a variable cell may shrink (more edges), so its buckets start with a
        25 % margin instead of 5 %; a cell that shrinks by more grows the capacity (a recompilation)."""
        return cls(model, cfg.fidelity, initial_margin=0.25 if cfg.cell == "variable" else 0.05)

    def key(self, atoms: Atoms) -> tuple[tuple[bool, int], int, int]:
        """(bucket, edges within the cutoff, atoms) of ``atoms``; bucket = (periodic, edge bucket)."""
        pbc = np.asarray(atoms.pbc, bool)
        cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else np.zeros((3, 3))
        edges = len(neighbor_list(np.asarray(atoms.positions, np.float64), cell, pbc, self.model.cutoff).senders)
        return (bool(pbc.any()), power_of_two(edges, 64)), edges, len(atoms)

    def plan(self, atoms_list: Sequence[Atoms]) -> list[tuple[int, tuple[bool, int]]]:
        """(index, bucket) of each structure in visiting order: bucket by bucket, largest first."""
        keys = [self.key(a) for a in atoms_list]
        order = sorted(range(len(keys)), key=lambda k: (keys[k][0], -keys[k][1], -keys[k][2], k))
        return [(k, keys[k][0]) for k in order]

    def calculator(self, bucket: tuple[bool, int]):
        """The calculator of ``bucket`` (made on first use)."""
        if bucket not in self.calculators:
            self.calculators[bucket] = self.model.calculator(self.fidelity, **self._options)
        return self.calculators[bucket]

    @property
    def compile_count(self) -> int:
        return sum(c.compile_count for c in self.calculators.values())


def _names(atoms_list: Sequence[Atoms], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"structure {k}" for k in range(len(atoms_list))]
    if len(names) != len(atoms_list):
        raise ValueError(f"{len(names)} names for {len(atoms_list)} structures")
    return list(names)


def _snapshot(atoms: Atoms, fidelity: str, **info) -> Atoms:
    """A copy of ``atoms`` holding its current energy, forces (and stress) in a SinglePointCalculator."""
    out = atoms.copy()
    for key in LABEL_KEYS:
        out.info.pop(key, None)
    out.arrays.pop("forces", None)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if np.all(atoms.pbc):
        results["stress"] = atoms.get_stress()
    out.calc = SinglePointCalculator(out, **results)
    out.info["fidelity"] = fidelity
    out.info.update(info)
    return out


def trajectory_path(traj: str, index: int, count: int) -> Path:
    """The trajectory file of structure ``index`` of ``count`` (see ``RelaxConfig.traj``)."""
    path = Path(traj)
    if path.suffix in TRAJECTORY_SUFFIXES:
        return path if count == 1 else path.with_name(f"{path.stem}_{index:04d}{path.suffix}")
    return path / f"{index:04d}.traj"


def _trajectory_writer(path: Path, stack: ExitStack) -> Callable[[Atoms], None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".traj":
        traj = stack.enter_context(Trajectory(str(path), "w"))
        return traj.write
    handle = stack.enter_context(open(path, "w"))
    return lambda atoms: ase.io.write(handle, atoms, format="extxyz")


def _check(model: Any, atoms_list: Sequence[Atoms], names: list[str], cfg: RelaxConfig | None) -> None:
    for atoms, name in zip(atoms_list, names):
        check_species(atoms.numbers, model.species, name)
        if cfg is not None and cfg.cell == "variable" and not np.all(atoms.pbc):
            raise ConfigError(f"{name}: a variable-cell relaxation needs a cell periodic in all three "
                              f"directions (pbc={atoms.pbc.tolist()}); use cell=fixed")


def _max_force(forces: np.ndarray) -> float:
    return float(np.sqrt((np.asarray(forces) ** 2).sum(axis=1)).max()) if len(forces) else 0.0


def _relax_one(atoms: Atoms, calc: Any, cfg: RelaxConfig, name: str, traj: Path | None) -> RelaxResult:
    atoms = atoms.copy()
    atoms.calc = calc
    initial = atoms.get_potential_energy()
    target = atoms
    if cfg.cell == "variable":
        target = FILTERS[cfg.cell_filter](atoms, scalar_pressure=cfg.pressure * units.GPa)
    kwargs = {} if cfg.maxstep is None else {"maxstep": cfg.maxstep}
    with ExitStack() as stack:
        opt = OPTIMIZERS[cfg.optimizer](target, logfile=None, **kwargs)
        if traj is not None:
            write = _trajectory_writer(traj, stack)
            opt.attach(lambda: write(_snapshot(atoms, calc.fidelity)), interval=1)
        converged = bool(opt.run(fmax=cfg.fmax, steps=cfg.steps))
    fmax = _max_force(target.get_forces())
    steps = int(opt.nsteps)
    out = _snapshot(atoms, calc.fidelity, relax_converged=converged, relax_steps=steps, relax_fmax=fmax)
    return RelaxResult(out, converged, steps, fmax, float(initial), float(out.get_potential_energy()), name, traj)


def relax(
    model: Any, atoms_list: Sequence[Atoms], cfg: RelaxConfig, *, names: Sequence[str] | None = None,
    pool: CalculatorPool | None = None, progress: Callable[[RelaxResult], None] | None = None,
) -> list[RelaxResult]:
    """Relax every structure of ``atoms_list`` (left unchanged) with ``cfg``; results in input order.

    names: labels of the structures in error messages (default "structure k"). pool: the
    calculators to use (default ``CalculatorPool.for_relax(model, cfg)``; pass one to read
    ``pool.compile_count`` afterwards or to share compilations with ``single_points``).
    progress: called with each result as it is done (visiting order).
    Raises ``FidelityError`` for an unknown fidelity and ``ConfigError`` naming the structure for
    an element the model does not know or a variable cell that is not periodic.
    """
    cfg.validate("relax")
    names = _names(atoms_list, names)
    pool = pool if pool is not None else CalculatorPool.for_relax(model, cfg)
    if pool.fidelity != model.fidelities[model.fidelity_index(cfg.fidelity)]:
        raise ValueError(f"the pool's fidelity {pool.fidelity!r} is not the config's {cfg.fidelity!r}")
    _check(model, atoms_list, names, cfg)
    results: list[RelaxResult | None] = [None] * len(atoms_list)
    for k, bucket in pool.plan(atoms_list):
        traj = None if cfg.traj is None else trajectory_path(cfg.traj, k, len(atoms_list))
        results[k] = _relax_one(atoms_list[k], pool.calculator(bucket), cfg, names[k], traj)
        if progress is not None:
            progress(results[k])
    return results


def single_points(
    model: Any, atoms_list: Sequence[Atoms], fidelity: str | None = None, *, names: Sequence[str] | None = None,
    pool: CalculatorPool | None = None,
) -> list[Atoms]:
    """Copies of ``atoms_list`` holding the model's energy, forces (and stress) at ``fidelity``."""
    names = _names(atoms_list, names)
    pool = pool if pool is not None else CalculatorPool(model, fidelity)
    _check(model, atoms_list, names, None)
    out: list[Atoms | None] = [None] * len(atoms_list)
    for k, bucket in pool.plan(atoms_list):
        atoms = atoms_list[k].copy()
        atoms.calc = pool.calculator(bucket)
        out[k] = _snapshot(atoms, pool.fidelity)
    return out


def write_structures(path: str | Path, atoms_list: Sequence[Atoms]) -> Path:
    """Write structures (e.g. ``[r.atoms for r in results]``) with their labels as extxyz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, list(atoms_list), format="extxyz")
    return path
