"""Pilot: cost and convergence of periodic PBE/r2SCAN labels for Si-C cells (README.md, "Pilot").

    OMP_NUM_THREADS=1 python experiments/materials/pilot.py [--cases A,B,...]

Times the labeller's pyscf calls (``timed_compute``: the code path of ``mfjax.label.levels``) on 8-atom cubic cells (rattled
0.05 Å, seed 0, so forces are non-zero) for each (structure, level, basis, ke_cutoff) case and appends
one JSON line per case to ``pilot.jsonl`` (cases already there are skipped: resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from ase.build import bulk
from mfjax.label.levels import Settings, parse_level

HERE = Path(__file__).resolve().parent
OUT = HERE / "pilot.jsonl"
#: Cubic 8-atom cells near the PBE lattice constants (Å).
CELLS = {"Si8": ("Si", "diamond", 5.47), "C8": ("C", "diamond", 3.57), "Si4C4": ("SiC", "zincblende", 4.38)}
#: name -> (cell, level, ke_cutoff in Hartree); ordered by how much the choice depends on them.
CASES = {
    "A": ("Si4C4", "pbe/gth-szv", 40.0),
    "B": ("Si4C4", "pbe/gth-dzvp", 40.0),
    "C": ("Si8", "pbe/gth-dzvp", 40.0),
    "D": ("Si4C4", "r2scan/gth-dzvp", 40.0),
    "E": ("Si8", "r2scan/gth-dzvp", 40.0),
    "F": ("C8", "pbe/gth-dzvp", 40.0),
    "G": ("C8", "pbe/gth-dzvp", 60.0),
    "H": ("Si4C4", "pbe/gth-dzvp", 60.0),
    "I": ("Si8", "pbe/gth-dzvp", 60.0),
    "J": ("Si8", "pbe/gth-szv", 40.0),
    "K": ("C8", "pbe/gth-szv", 40.0),
    "L": ("Si4C4", "r2scan/gth-szv", 40.0),
    "P": ("C8", "pbe/gth-szv", 60.0),
    "Q": ("Si8", "pbe/gth-szv", 60.0),
    "R": ("Si4C4", "pbe/gth-szv", 60.0),
    "S": ("C8", "pbe/gth-szv", 80.0),
    "T": ("Si4C4", "pbe/gth-szv", 80.0),
    "U": ("Si8", "pbe/gth-szv", 80.0),
    "V": ("Si4C4", "pbe/gth-dzv", 40.0),
    "W": ("Si8", "pbe/gth-dzv", 40.0),
    "X": ("Si4C4", "r2scan/gth-dzv", 40.0),
    "Y": ("C8", "pbe/gth-dzv", 40.0),
    "Z": ("Si4C4", "pbe/gth-dzvp-molopt-sr", 40.0),
    "a": ("Si4C4", "pbe/gth-dzv", 60.0),
    "b": ("Si4C4", "r2scan/gth-dzv", 60.0),
}


def cell(name: str):  # type: ignore[no-untyped-def]
    symbol, structure, a = CELLS[name]
    atoms = bulk(symbol, structure, a=a, cubic=True)
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, size=atoms.positions.shape)
    return atoms


def timed_compute(atoms, level, settings):  # type: ignore[no-untyped-def]
    """``mfjax.label.levels.compute`` for a cell, with the SCF, force and stress phases timed
    (the same pyscf calls as ``levels._periodic_dft``; the energy and labels are identical)."""
    from ase.units import Bohr, Hartree
    from pyscf.pbc import dft as pbcdft
    from pyscf.pbc import gto as pbcgto

    phases = {}
    t = time.perf_counter()
    cell = pbcgto.Cell()
    cell.atom = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell.a, cell.unit, cell.basis = np.asarray(atoms.cell[:]), "Angstrom", level.basis
    cell.pseudo, cell.ke_cutoff, cell.verbose = settings.pseudo, settings.ke_cutoff, 0
    cell.build()
    mf = pbcdft.KRKS(cell, cell.make_kpts(list(settings.kmesh)))
    mf.xc, mf.conv_tol, mf.max_cycle = level.method, settings.conv_tol, settings.max_cycle
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    energy = float(mf.kernel()) * Hartree
    phases["scf_s"] = time.perf_counter() - t
    forces = stress = None
    grad = mf.nuc_grad_method()
    if level.method == "pbe":
        t = time.perf_counter()
        forces = -np.asarray(grad.kernel()) * (Hartree / Bohr)
        phases["forces_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sigma = np.asarray(grad.get_stress()) * (Hartree / Bohr**3)
    phases["stress_s"] = time.perf_counter() - t
    sigma = 0.5 * (sigma + sigma.T)
    stress = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]])
    extra = {"nao": int(cell.nao), "mesh": [int(m) for m in cell.mesh], "scf_cycles": len(cycles),
             **{k: round(v, 1) for k, v in phases.items()}}
    return energy, forces, stress, bool(mf.converged), extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args(argv)
    done = {json.loads(line)["case"] for line in OUT.read_text().splitlines()} if OUT.exists() else set()
    for case in args.cases.split(","):
        if case in done:
            continue
        name, level, ke = CASES[case]
        settings = Settings(kmesh=(2, 2, 2), ke_cutoff=ke, pseudo="gth-pbe", conv_tol=1e-8)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        energy, forces, stress, converged, extra = timed_compute(cell(name), parse_level(level), settings)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        row = {"case": case, "cell": name, "level": level, "ke_cutoff_Ha": ke, "kmesh": "2 2 2",
               "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), **extra, "converged": converged,
               "energy_eV": energy,
               "forces": None if forces is None else np.round(forces, 6).tolist(),
               "stress": None if stress is None else np.round(stress, 7).tolist()}
        with open(OUT, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(case, name, level, ke, {k: v for k, v in row.items() if k not in ("forces", "stress")}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
