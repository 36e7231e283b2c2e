"""Si-C structures for the periodic multi-fidelity dataset (see README.md, "Structures").

Everything here is deterministic (fixed seeds, fixed enumeration order) and needs only ASE and
spglib: ordered decorations of the 8-atom cubic diamond cell and of its 2x1x1 doubling, the 2H and
4H SiC polytypes, strains for equations of state and elastic constants, rattles, and
"hot" snapshots from Langevin MD with the Tersoff (1989) Si-C potential (ASE's native Tersoff
calculator; no extra package).
"""

from __future__ import annotations

import itertools

import numpy as np
import spglib
from ase import Atoms
from ase.build import bulk
from ase.calculators.tersoff import Tersoff, TersoffParameters
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

#: Cubic lattice constants (Å) of diamond Si, 3C-SiC and diamond C at the labelling level
#: (PBE/gth-dzv, GTH-PBE, ke_cutoff 60 Ha): plane-wave PBE values (5.47, 4.38, 3.57) times
#: 1 + P / (3 B), P the pilot's pressure at the plane-wave lattice constant, B the PBE bulk modulus
#: (README.md, "Pilot"). The Tersoff-relaxed cells are scaled to these, so that the +-3 % strains of
#: the equation-of-state set bracket the level's own minimum.
A_TARGET = {"Si": 5.60, "SiC": 4.46, "C": 3.615}
#: Tersoff (1989) lattice constants of the same phases (measured with the parameters below).
A_TERSOFF = {"Si": 5.432, "SiC": 4.32, "C": 3.566}

# J. Tersoff, PRB 39, 5566 (1989) and erratum PRB 41, 3248 (1990), in the layout of LAMMPS's
# potentials/SiC.tersoff: m, gamma, lambda3, c, d, costheta0, n, beta, lambda2, B, R, D, lambda1, A.
_TERSOFF_SIC = {
    ("C", "C", "C"): (3.0, 1.0, 0.0, 38049, 4.3484, -0.57058, 0.72751,
                      1.5724e-7, 2.2119, 346.7, 1.95, 0.15, 3.4879, 1393.6),
    ("Si", "Si", "Si"): (3.0, 1.0, 0.0, 100390, 16.217, -0.59825, 0.78734,
                         1.1e-6, 1.73222, 471.18, 2.85, 0.15, 2.4799, 1830.8),
    ("Si", "Si", "C"): (3.0, 1.0, 0.0, 100390, 16.217, -0.59825, 0.0,
                        0.0, 0.0, 0.0, 2.36, 0.15, 0.0, 0.0),
    ("Si", "C", "C"): (3.0, 1.0, 0.0, 100390, 16.217, -0.59825, 0.78734,
                       1.1e-6, 1.97205, 395.126, 2.36, 0.15, 2.9839, 1597.3111),
    ("C", "Si", "Si"): (3.0, 1.0, 0.0, 38049, 4.3484, -0.57058, 0.72751,
                        1.5724e-7, 1.97205, 395.126, 2.36, 0.15, 2.9839, 1597.3111),
    ("C", "Si", "C"): (3.0, 1.0, 0.0, 38049, 4.3484, -0.57058, 0.0,
                       0.0, 0.0, 0.0, 1.95, 0.15, 0.0, 0.0),
    ("C", "C", "Si"): (3.0, 1.0, 0.0, 38049, 4.3484, -0.57058, 0.0,
                       0.0, 0.0, 0.0, 2.36, 0.15, 0.0, 0.0),
    ("Si", "C", "Si"): (3.0, 1.0, 0.0, 100390, 16.217, -0.59825, 0.0,
                        0.0, 0.0, 0.0, 2.85, 0.15, 0.0, 0.0),
}


class _Tersoff(Tersoff):
    """ASE's Tersoff with d b_ij / d zeta = 0 at zeta = 0 (an atom with one neighbour in range):
    ASE raises ZeroDivisionError there, but the derivative is then only multiplied by the empty
    sum over third atoms k."""

    def _calc_bij_d(self, zeta: float, beta: float, n: float) -> float:
        return 0.0 if beta * zeta == 0.0 else super()._calc_bij_d(zeta, beta, n)


def tersoff() -> Tersoff:
    """ASE's Tersoff calculator with the Si-C parameters of Tersoff (1989)."""
    return _Tersoff({k: TersoffParameters.from_list(list(v)) for k, v in _TERSOFF_SIC.items()})


def formula(atoms: Atoms) -> str:
    """``Si{n}C{m}`` with both counts always written (``Si8C0``, ``Si4C4``), a stable composition label."""
    symbols = atoms.get_chemical_symbols()
    return f"Si{symbols.count('Si')}C{symbols.count('C')}"


def site_permutations(atoms: Atoms) -> list[tuple[int, ...]]:
    """The permutations of the sites of ``atoms`` induced by its space-group operations (spglib)."""
    frac = atoms.get_scaled_positions()
    sym = spglib.get_symmetry((atoms.cell[:], frac, atoms.numbers), symprec=1e-4)
    perms = set()
    for rot, trans in zip(sym["rotations"], sym["translations"]):
        moved = (frac @ rot.T + trans) % 1.0
        perm = []
        for x in moved:
            d = (frac - x + 0.5) % 1.0 - 0.5
            perm.append(int(np.argmin(np.linalg.norm(d @ atoms.cell[:], axis=1))))
        perms.add(tuple(perm))
    return sorted(perms)


def distinct_decorations(atoms: Atoms, n_carbon: int) -> list[tuple[int, ...]]:
    """One representative (lexicographically first) per symmetry class of ``n_carbon`` C sites."""
    perms = site_permutations(atoms)
    seen: set[frozenset[int]] = set()
    out = []
    for combo in itertools.combinations(range(len(atoms)), n_carbon):
        if frozenset(combo) in seen:
            continue
        seen |= {frozenset(p[i] for i in combo) for p in perms}
        out.append(combo)
    return out


def decorate(host: Atoms, carbon_sites: tuple[int, ...]) -> Atoms:
    """``host`` with C on ``carbon_sites``, Si elsewhere, scaled to the Tersoff lattice constant
    interpolated (piecewise linearly in x_C through Si, 3C-SiC, C) for its composition."""
    atoms = host.copy()
    symbols = ["C" if i in carbon_sites else "Si" for i in range(len(atoms))]
    atoms.set_chemical_symbols(symbols)
    x_c = len(carbon_sites) / len(atoms)
    a_host = np.cbrt(host.get_volume() / len(host) * 8.0)
    a = float(np.interp(x_c, [0.0, 0.5, 1.0], [A_TERSOFF[k] for k in ("Si", "SiC", "C")]))
    atoms.set_cell(atoms.cell[:] * (a / a_host), scale_atoms=True)
    return atoms


def target_scale(x_c: float) -> float:
    """Linear scale factor Tersoff -> A_TARGET, piecewise linear in x_C through Si, SiC, C."""
    ratios = [A_TARGET[k] / A_TERSOFF[k] for k in ("Si", "SiC", "C")]
    return float(np.interp(x_c, [0.0, 0.5, 1.0], ratios))


def relax_tersoff(atoms: Atoms, fmax: float = 0.01, steps: int = 400) -> Atoms:
    """Positions and cell relaxed with Tersoff (FIRE on a Frechet cell filter), then scaled by ``target_scale``."""
    work = atoms.copy()
    work.calc = tersoff()
    FIRE(FrechetCellFilter(work), logfile=None).run(fmax=fmax, steps=steps)
    x_c = work.get_chemical_symbols().count("C") / len(work)
    out = Atoms(work.numbers, positions=work.positions, cell=work.cell, pbc=True)
    out.set_cell(out.cell[:] * target_scale(x_c), scale_atoms=True)
    return out


def cubic_host(a: float = 5.0) -> Atoms:
    """The 8-atom conventional diamond cell (all Si; sites are decorated with C afterwards)."""
    return bulk("Si", "diamond", a=a, cubic=True)


def polytype(name: str) -> Atoms:
    """2H (wurtzite, 4 atoms) or 4H (ABCB stacking, 8 atoms) SiC, ideal geometry with the 3C-SiC bond length of A_TARGET."""
    a = A_TARGET["SiC"] / np.sqrt(2.0)  # Si-Si distance of 3C-SiC
    c_layer = A_TARGET["SiC"] / np.sqrt(3.0)  # bilayer spacing of 3C
    stacking = {"2H": "AB", "4H": "ABCB"}[name]
    shifts = {"A": (0.0, 0.0), "B": (1 / 3, 2 / 3), "C": (2 / 3, 1 / 3)}
    n = len(stacking)
    cell = np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, n * c_layer]])
    bond = np.sqrt(3.0) / 4.0 * A_TARGET["SiC"]  # Si-C bond length of 3C
    symbols, frac = [], []
    for k, layer in enumerate(stacking):
        fx, fy = shifts[layer]
        z = k / n
        symbols += ["Si", "C"]
        frac += [(fx, fy, z), (fx, fy, z + bond / cell[2, 2])]
    return Atoms(symbols, scaled_positions=frac, cell=cell, pbc=True)


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """``atoms`` with cell ``cell @ (1 + strain)`` (symmetric 3x3), atoms scaled with the cell."""
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    return out


def voigt_strain(component: int, value: float) -> np.ndarray:
    """Symmetric strain tensor with one Voigt component set (engineering shear: e_yz = value / 2)."""
    e = np.zeros((3, 3))
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    i, j = pairs[component]
    if i == j:
        e[i, i] = value
    else:
        e[i, j] = e[j, i] = value / 2.0
    return e


def rattled(atoms: Atoms, std: float, max_strain: float, rng: np.random.Generator) -> Atoms:
    """Gaussian displacements of ``std`` Å and a random symmetric strain with components in
    ``[-max_strain, max_strain]``."""
    e = rng.uniform(-max_strain, max_strain, size=(3, 3))
    out = strained(atoms, 0.5 * (e + e.T))
    out.positions += rng.normal(0.0, std, size=out.positions.shape)
    return out


def hot_snapshots(atoms: Atoms, temperature_K: float, n_frames: int, seed: int, *,
                  timestep_fs: float = 1.0, equilibration_steps: int = 200,
                  interval_steps: int = 50) -> list[Atoms]:
    """Langevin MD snapshots (fixed cell) with the Tersoff potential at ``temperature_K``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    rng = np.random.default_rng(seed)
    work = atoms.copy()
    work.calc = tersoff()
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
    Stationary(work)
    dyn = Langevin(work, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.02 / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(equilibration_steps)
    frames = []
    for _ in range(n_frames):
        dyn.run(interval_steps)
        frames.append(Atoms(work.numbers, positions=work.positions.copy(), cell=work.cell, pbc=True))
    return frames
