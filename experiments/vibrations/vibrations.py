"""Harmonic vibrational frequencies of methanol at two fidelities, from the Hessian of the shipped
PBE + r2SCAN model (``jax.hessian`` of ``mfjax.model.energy.energy_fn``).

For each fidelity: a short BFGS relaxation with the model's ASE calculator, then the Cartesian
Hessian (float64, forward over reverse mode), mass-weighted and diagonalised. The six lowest modes
are the rigid-body translations and rotations (near zero when the relaxation converged); the other
3N - 6 are the harmonic frequencies. ``--check-fd`` also computes them with ASE's finite-difference
``Vibrations`` (the model's forces) as an independent check of the Hessian.

    python experiments/vibrations/vibrations.py [--model DIR] [--fmax 1e-4] [--check-fd]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)  # Hessians in float64 (a script may choose; mfjax never does)

import ase.io  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.neighborlist import natural_cutoffs, neighbor_list  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

import mfjax  # noqa: E402
from mfjax.datasets import dataset_path, pretrained_model_path  # noqa: E402
from mfjax.model.energy import energy_fn  # noqa: E402

FIDELITIES = ("pbe", "r2scan")
#: sqrt(eV / (Å^2 amu)) -> cm^-1
TO_CM = units._hbar * 1e10 / np.sqrt(units._e * units._amu) / units.invcm


def methanol() -> ase.Atoms:
    """The first methanol frame of the shipped PBE data (a 300 K MD snapshot)."""
    for atoms in ase.io.iread(dataset_path("organics_pbe"), index=":"):
        if atoms.info.get("molecule") == "methanol":
            return ase.Atoms(atoms.numbers, atoms.positions)  # in free space, without labels
    raise RuntimeError("no methanol frame in organics_pbe")


def relax(model, atoms: ase.Atoms, fidelity: str, fmax: float, steps: int) -> tuple[ase.Atoms, int, float]:
    atoms = atoms.copy()
    atoms.calc = model.calculator(fidelity)
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    residual = float(np.max(np.linalg.norm(atoms.get_forces(), axis=1)))
    return atoms, opt.get_number_of_steps(), residual


def harmonic(model, atoms: ase.Atoms, fidelity: str):
    """(frequencies [3N] cm^-1, imaginary as negative; mass-weighted modes [3N, 3N]; Hessian)."""
    n = len(atoms)
    energy = energy_fn(model, atoms, fidelity)
    hessian = np.asarray(jax.jit(jax.hessian(energy))(jnp.asarray(atoms.positions))).reshape(3 * n, 3 * n)
    hessian = 0.5 * (hessian + hessian.T)  # symmetric to rounding already; make it exact for eigh
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(atoms.get_masses()), 3)
    eigenvalues, modes = np.linalg.eigh(hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :])
    frequencies = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * TO_CM
    return frequencies, modes, hessian


def character(atoms: ase.Atoms, mode: np.ndarray) -> str:
    """The bond stretch that dominates a mode (Cartesian displacements), else 'bend/torsion'."""
    n = len(atoms)
    u = (mode * np.repeat(1.0 / np.sqrt(atoms.get_masses()), 3)).reshape(n, 3)
    u /= np.linalg.norm(u)
    symbols, pos = atoms.get_chemical_symbols(), atoms.positions
    first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    bonds = [(i, j) for i, j in zip(first, second) if i < j]
    best, share = "bend/torsion", 0.0
    stretches = {}
    for i, j in bonds:
        e = (pos[j] - pos[i]) / np.linalg.norm(pos[j] - pos[i])
        pair = "-".join(sorted((symbols[i], symbols[j]), key="CNOH".index))
        stretches[pair] = stretches.get(pair, 0.0) + float(((u[j] - u[i]) @ e) ** 2)
    total = sum(stretches.values())
    for pair, value in stretches.items():
        if value > share:
            best, share = pair, value
    return f"{best} stretch" if total > 0 and share / total > 0.5 and share > 0.2 else "bend/torsion"


def ase_finite_differences(model, atoms: ase.Atoms, fidelity: str) -> np.ndarray:
    from ase.vibrations import Vibrations

    atoms = atoms.copy()
    atoms.calc = model.calculator(fidelity)
    with tempfile.TemporaryDirectory() as tmp:
        vib = Vibrations(atoms, name=f"{tmp}/vib", delta=0.005, nfree=4)
        vib.run()
        freq = vib.get_frequencies()
    return np.where(np.abs(freq.imag) > np.abs(freq.real), -np.abs(freq.imag), freq.real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(pretrained_model_path("organics-small")))
    parser.add_argument("--fmax", type=float, default=1e-4, help="BFGS force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="at most this many BFGS steps")
    parser.add_argument("--check-fd", action="store_true", help="also ASE finite-difference Vibrations")
    args = parser.parse_args()

    model = mfjax.load_model(args.model, precision="float64")
    start = methanol()
    results = {}
    for fidelity in FIDELITIES:
        t0 = time.perf_counter()
        relaxed, steps, residual = relax(model, start, fidelity, args.fmax, args.steps)
        t1 = time.perf_counter()
        freq, modes, _ = harmonic(model, relaxed, fidelity)
        t2 = time.perf_counter()
        results[fidelity] = (relaxed, freq, modes)
        print(f"{fidelity}: BFGS {steps} steps, max |F| {residual:.1e} eV/Å ({t1 - t0:.1f} s); "
              f"Hessian {t2 - t1:.1f} s (incl. compilation); rigid-body modes "
              + " ".join(f"{f:.1f}" for f in freq[:6]) + " cm^-1")
        if args.check_fd:
            fd = ase_finite_differences(model, relaxed, fidelity)
            print(f"{fidelity}: ASE finite differences vs jax.hessian, internal modes: max |dν| = "
                  f"{np.max(np.abs(np.sort(fd)[6:] - freq[6:])):.1e} cm^-1")

    ref_atoms, _, ref_modes = results[FIDELITIES[0]]
    print()
    print("| mode | character (PBE mode) | PBE (cm^-1) | r2SCAN (cm^-1) | r2SCAN - PBE |")
    print("|-----:|:---------------------|------------:|---------------:|-------------:|")
    for k in range(6, 3 * len(ref_atoms)):
        a, b = results["pbe"][1][k], results["r2scan"][1][k]
        print(f"| {k - 5:4d} | {character(ref_atoms, ref_modes[:, k]):20s} | {a:11.0f} | {b:14.0f} | {b - a:+12.0f} |")


if __name__ == "__main__":
    main()
