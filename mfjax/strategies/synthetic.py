"""Two analytic "fidelities" on the same geometries, for tests and demos of the strategies.

Small H/C/O clusters are jittered around a few base shapes; "temperature" sets the jitter. Low
fidelity: Lennard-Jones (sigma 1.6 Å, epsilon 0.05 eV) plus per-element atomic energies; high
fidelity: a different LJ (sigma 1.7 Å, epsilon 0.07 eV) plus other atomic energies — a smooth,
learnable difference, like PBE vs r2SCAN. Frames carry ``structure_id`` (shared by the two
fidelities), ``temperature_K`` and ``region`` ("covered" below ``t_split``, else "uncovered"),
like the shipped dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["synthetic_frames", "write_synthetic", "synthetic_config"]

_E_ATOM = {"low": {1: -13.6, 6: -1030.0, 8: -2040.0}, "high": {1: -13.9, 6: -1031.5, 8: -2042.0}}
_LJ = {"low": (1.6, 0.05), "high": (1.7, 0.07)}


def synthetic_frames(n: int, fidelity: str, seed: int = 0, temperatures=(100.0, 300.0, 900.0), t_split: float = 500.0):
    """``n`` labelled ``ase.Atoms`` at ``fidelity`` ("low" or "high"); the same (n, seed) gives the
    same geometries at both fidelities. Frame k has structure_id f"syn-{seed}-{k}"."""
    import ase
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    sigma, eps = _LJ[fidelity]
    frames = []
    for k in range(n):
        numbers = rng.choice([1, 6, 8], size=int(rng.integers(3, 6)), p=[0.5, 0.3, 0.2])
        temperature = float(temperatures[k % len(temperatures)])
        base = np.array([[1.9 * i, 0.7 * (i % 2), 0.0] for i in range(len(numbers))])
        jitter = 0.04 * np.sqrt(temperature / 100.0)
        positions = base + rng.normal(0.0, jitter, base.shape)
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
    """Write ``low.extxyz`` (n_low frames) and ``high.extxyz`` (the first n_high geometries) into
    ``directory``; returns their paths."""
    import ase.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    low, high = directory / "low.extxyz", directory / "high.extxyz"
    ase.io.write(low, synthetic_frames(n_low, "low", seed))
    ase.io.write(high, synthetic_frames(n_low, "high", seed)[:n_high])
    return low, high


def synthetic_config(directory: str | Path, **ablation) -> dict:
    """A tiny ablation config (dict) over :func:`write_synthetic` data in ``directory``."""
    low, high = write_synthetic(directory)
    section = {"low": "low", "high": "high", "hf_fractions": [0.5, 1.0], "seeds": 1, "eval_every": 5, "e0_alpha": 1e-8,
               "steps": {"pretrain": 10, "hf": 10, "joint": 10, "append": 10}}
    section.update(ablation)
    return {
        "data": {"cutoff": 4.0, "datasets": [{"path": str(low)}, {"path": str(high)}],
                 "split": {"valid": 0.15, "test": 0.2, "seed": 0}},
        "model": {"num_layers": 1, "hidden_irreps": "8x0e+4x1o", "lmax": 1, "num_basis": 4, "radial_hidden": [8]},
        "train": {"lr": 0.01, "batch": {"max_graphs": 8}, "loss": {"fidelity_weights": {"high": 3.0}}},
        "output": {"dir": str(Path(directory) / "ablation"), "progress": False, "plots": False},
        "ablation": section,
    }
