"""Synthetic labelled datasets for tests (Lennard-Jones labels; not part of the library).

* ``write_synthetic_dataset``: two LJ "fidelities" ("lo", "hi") of small clusters and cells, and a
  config dict for a tiny real ``Potential`` that trains on them in seconds (``mfjax train`` tests);
* ``synthetic_config``: an ablation config over two analytic fidelities ("low", "high") on the same
  H/C/O geometries with ``structure_id``, ``temperature_K`` and ``region`` (``mfjax ablate`` tests).
"""

from __future__ import annotations

from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from mfjax.data.structures import structure_from_atoms

__all__ = ["TINY_MODEL", "synthetic_atoms", "to_structures", "write_synthetic_dataset", "synthetic_frames",
           "write_synthetic", "synthetic_config"]

#: A real ``Potential`` small enough to compile in seconds.
TINY_MODEL = {"preset": "small", "num_layers": 1, "hidden_irreps": "8x0e+4x1e", "lmax": 1, "radial_hidden": [8]}


def synthetic_atoms(n: int, fidelity: str, seed: int = 0, periodic_every: int = 3, sigma_scale: float = 1.0):
    """``n`` small labelled ``ase.Atoms`` (Lennard-Jones Ar/Cu-like clusters and cells).

    ``sigma_scale`` changes the "level of theory" so two calls with different scales give two
    consistent fidelities. Every ``periodic_every``-th frame is a periodic cell with a stress label.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        periodic = periodic_every > 0 and k % periodic_every == 0
        n_atoms = int(rng.integers(3, 7))
        if periodic:
            grid = np.array([[i, j, l] for i in range(2) for j in range(2) for l in range(2)], float)[:n_atoms]
            pos = grid * 2.2 + rng.normal(0, 0.08, (n_atoms, 3))
            atoms = ase.Atoms(numbers=rng.choice([18, 29], n_atoms), positions=pos, cell=np.eye(3) * 4.4, pbc=True)
        else:
            pos = np.array([[2.1 * i, 0.6 * (i % 2), 0.3 * rng.normal()] for i in range(n_atoms)])
            atoms = ase.Atoms(numbers=rng.choice([18, 29], n_atoms), positions=pos + rng.normal(0, 0.05, pos.shape))
        atoms.calc = LennardJones(sigma=2.0 * sigma_scale, epsilon=0.05, rc=3.9, smooth=True)
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if periodic:
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["fidelity"] = fidelity
        frames.append(atoms)
    return frames


def to_structures(frames) -> list:
    """``ase.Atoms`` with calculator labels and ``info["fidelity"]`` -> ``Structure`` list."""
    out = []
    for i, atoms in enumerate(frames):
        res = atoms.calc.results if atoms.calc is not None else {}
        out.append(structure_from_atoms(
            atoms, atoms.info["fidelity"], energy=res.get("energy"), forces=res.get("forces"),
            stress=None if "stress" not in res else voigt_6_to_full_3x3_stress(res["stress"]), index=i,
        ))
    return out


def write_synthetic_dataset(directory, n_low: int = 40, n_high: int = 12, seed: int = 0) -> dict:
    """Write a two-fidelity LJ dataset (``lo.extxyz``, ``hi.extxyz``) and return a config dict for a
    tiny real ``Potential`` that trains on it in seconds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ase.io.write(directory / "lo.extxyz", synthetic_atoms(n_low, "lo", seed))
    ase.io.write(directory / "hi.extxyz", synthetic_atoms(n_high, "hi", seed + 1, sigma_scale=1.05))
    return {
        "data": {
            "cutoff": 4.0,
            "datasets": [{"path": str(directory / "lo.extxyz"), "fidelity": "lo"}, {"path": str(directory / "hi.extxyz")}],
            "split": {"valid": 0.2, "test": 0.2},
        },
        "model": dict(TINY_MODEL),
        "train": {"epochs": 3, "batch": {"max_graphs": 4}, "loss": {"fidelity_weights": {"hi": 7.0}}, "ema": 0.99,
                  "checkpoint_every_steps": 3},
        "output": {"dir": str(directory / "run"), "progress": False},
    }


_E_ATOM = {"low": {1: -13.6, 6: -1030.0, 8: -2040.0}, "high": {1: -13.9, 6: -1031.5, 8: -2042.0}}
_LJ = {"low": (1.6, 0.05), "high": (1.7, 0.07)}


def synthetic_frames(n: int, fidelity: str, seed: int = 0, temperatures=(100.0, 300.0, 900.0), t_split: float = 500.0):
    """``n`` labelled H/C/O clusters at ``fidelity`` ("low" or "high"): LJ (low: sigma 1.6 Å, eps
    0.05 eV; high: 1.7 Å, 0.07 eV) plus per-element atomic energies — a smooth, learnable difference.
    The same (n, seed) gives the same geometries at both fidelities; frame k has structure_id
    f"syn-{seed}-{k}", a temperature and a region ("covered" below ``t_split``, else "uncovered")."""
    rng = np.random.default_rng(seed)
    sigma, eps = _LJ[fidelity]
    frames = []
    for k in range(n):
        numbers = rng.choice([1, 6, 8], size=int(rng.integers(3, 6)), p=[0.5, 0.3, 0.2])
        temperature = float(temperatures[k % len(temperatures)])
        base = np.array([[1.9 * i, 0.7 * (i % 2), 0.0] for i in range(len(numbers))])
        positions = base + rng.normal(0.0, 0.04 * np.sqrt(temperature / 100.0), base.shape)
        atoms = ase.Atoms(numbers=numbers, positions=positions)
        atoms.calc = LennardJones(sigma=sigma, epsilon=eps, rc=4.0, smooth=True)
        energy = atoms.get_potential_energy() + sum(_E_ATOM[fidelity][int(z)] for z in numbers)
        forces = atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        atoms.info.update(fidelity=fidelity, structure_id=f"syn-{seed}-{k}", temperature_K=temperature,
                          region="covered" if temperature < t_split else "uncovered", molecule="cluster")
        frames.append(atoms)
    return frames


def write_synthetic(directory: str | Path, n_low: int = 60, n_high: int = 30, seed: int = 0) -> tuple[Path, Path]:
    """Write ``low.extxyz`` (n_low frames) and ``high.extxyz`` (the first n_high geometries)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    low, high = directory / "low.extxyz", directory / "high.extxyz"
    ase.io.write(low, synthetic_frames(n_low, "low", seed))
    ase.io.write(high, synthetic_frames(n_low, "high", seed)[:n_high])
    return low, high


def synthetic_config(directory: str | Path, train: dict | None = None, **ablation) -> dict:
    """A tiny ablation config (dict) over :func:`write_synthetic` data in ``directory``; ``train``
    keys and ``ablation`` keys update the defaults."""
    low, high = write_synthetic(directory)
    section = {"low": "low", "high": "high", "hf_fractions": [0.5, 1.0], "seeds": 1,
               "budget": {"total_steps": 20, "pretrain_steps": 10}}
    section.update(ablation)
    train_section = {"lr": 0.01, "batch": {"max_graphs": 8}, "loss": {"fidelity_weights": {"high": 3.0}},
                     "e0_alpha": 1e-8, "eval_every_steps": 5}
    train_section.update(train or {})
    return {
        "data": {"cutoff": 4.0, "datasets": [{"path": str(low)}, {"path": str(high)}],
                 "split": {"valid": 0.15, "test": 0.2, "seed": 0}},
        "model": {"num_layers": 1, "hidden_irreps": "8x0e+4x1o", "lmax": 1, "num_basis": 4, "radial_hidden": [8]},
        "train": train_section,
        "output": {"dir": str(Path(directory) / "ablation"), "progress": False, "plots": False},
        "ablation": section,
    }
