"""Levels of theory: parse ``method/basis`` strings and compute labels with pyscf.

A level is a method (``pbe``, ``r2scan``, ``ccsd(t)``) and a Gaussian basis. Molecules (no periodic
direction) run through ``pyscf.gto``/``pyscf.dft`` with density fitting for DFT; cells with
``atoms.pbc`` all true run through ``pyscf.pbc`` (k-point Kohn-Sham, GTH pseudopotentials, FFT density
fitting), which gives stress as well.

What each level yields (anything else is *absent*, never zero):

============== ===================== =================================
method         molecule              periodic cell
============== ===================== =================================
pbe            energy, forces        energy, forces, stress
r2scan         energy, forces        energy, stress (pyscf.pbc has no meta-GGA forces)
ccsd(t)        energy                not supported
============== ===================== =================================

Units out: energy eV (total electronic energy incl. nuclear repulsion), forces eV/Å, stress eV/Å^3 in
ASE's convention (``sigma = 1/V dE/d(strain)``, positive = tensile, Voigt order xx yy zz yz xz xy).
pyscf's ``get_stress`` returns exactly ``1/V dE/de`` (checked against a finite difference of the energy
under isotropic strain), so only the Hartree/Bohr^3 -> eV/Å^3 conversion is applied.

pyscf is imported lazily so that importing this module is cheap (and so that worker processes can set
their thread count before the OpenMP runtime starts).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from mfjax.errors import MfjaxError

#: Canonical method names and the aliases accepted on the command line.
METHOD_ALIASES: dict[str, str] = {
    "pbe": "pbe",
    "r2scan": "r2scan",
    "ccsd(t)": "ccsd(t)",
    "ccsdt": "ccsd(t)",
}
#: Default fidelity name for each canonical method (a name safe for files and configs).
DEFAULT_FIDELITY: dict[str, str] = {"pbe": "pbe", "r2scan": "r2scan", "ccsd(t)": "ccsdt"}
#: pyscf exchange-correlation names of the DFT methods.
XC_NAMES: dict[str, str] = {"pbe": "pbe", "r2scan": "r2scan"}


class LevelError(MfjaxError, ValueError):
    """A level of theory that cannot be used: malformed, unknown method, basis or pseudopotential."""


@dataclasses.dataclass(frozen=True)
class Level:
    """A level of theory: canonical method name and basis set name (lower case)."""

    method: str
    basis: str

    @property
    def name(self) -> str:
        """``method/basis``, e.g. ``pbe/def2-svp``."""
        return f"{self.method}/{self.basis}"

    @property
    def default_fidelity(self) -> str:
        """The fidelity name used when none is given (``pbe``, ``r2scan``, ``ccsdt``)."""
        return DEFAULT_FIDELITY[self.method]


def parse_level(text: str) -> Level:
    """Parse ``METHOD/BASIS`` (case-insensitive), e.g. ``pbe/def2-svp`` or ``CCSD(T)/cc-pVDZ``."""
    method, sep, basis = text.strip().lower().partition("/")
    if not sep or not basis:
        raise LevelError(f"level {text!r} is not of the form METHOD/BASIS (e.g. pbe/def2-svp)")
    if method not in METHOD_ALIASES:
        raise LevelError(f"unknown method {method!r} in {text!r}; known: {sorted(METHOD_ALIASES)}")
    return Level(METHOD_ALIASES[method], basis)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Numerical settings of a calculation (recorded with every frame that uses them)."""

    conv_tol: float = 1e-9
    """SCF energy convergence threshold (Hartree)."""
    max_cycle: int = 100
    """Maximum SCF iterations; a frame that does not converge is kept and marked."""
    density_fit: bool = True
    """Density fitting (RI-J/XC) for molecular DFT."""
    frozen_core: bool = True
    """Freeze core orbitals in CCSD(T) (the usual choice with cc-pVXZ bases)."""
    ke_cutoff: float = 40.0
    """Plane-wave kinetic energy cutoff of the periodic density grid (Hartree)."""
    pseudo: str = "gth-pbe"
    """Pseudopotential for periodic cells (GTH)."""
    kmesh: tuple[int, int, int] | None = None
    """Monkhorst-Pack mesh (Gamma-centred) for periodic cells; None: ``atoms.info['kmesh']`` or 2x2x2."""
    smearing: float = 0.0
    """Fermi-Dirac smearing width (Hartree) of periodic cells; 0: integer occupations (aufbau per
    k-point). Needed where a cell has no gap at its k-mesh (the integer-occupation SCF then never
    converges). With smearing the energy label is the Mermin free energy E - sigma*S, the quantity
    whose derivatives pyscf's forces and stress are."""
    ao_cache_mb: float = 1500.0
    """Memory (MB) for AO values on the FFT grid kept across the SCF cycles of a periodic cell
    (``mfjax.label.pbc_fast``; the same numbers, ~1.5x faster SCF); 0 disables."""


@dataclasses.dataclass
class Result:
    """Labels of one frame. Absent labels are None."""

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    converged: bool
    wall_time_s: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _spin_and_charge(atoms: Atoms) -> tuple[int, int]:
    charge = int(atoms.info.get("charge", 0))
    nelec = int(atoms.get_atomic_numbers().sum()) - charge
    spin = int(atoms.info.get("spin", nelec % 2))
    return spin, charge


def _molecule(atoms: Atoms, basis: str) -> Any:
    from pyscf import gto

    spin, charge = _spin_and_charge(atoms)
    return gto.M(
        atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
        basis=basis, unit="Angstrom", charge=charge, spin=spin, verbose=0,
    )


def _molecular_dft(atoms: Atoms, level: Level, settings: Settings) -> Result:
    from pyscf import dft

    mol = _molecule(atoms, level.basis)
    mf = dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)
    if settings.density_fit:
        mf = mf.density_fit()
    mf.xc = XC_NAMES[level.method]
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    energy = float(mf.kernel())
    forces = None
    if mf.converged:  # gradients of an unconverged density are not labels
        grad = mf.nuc_grad_method().kernel()
        forces = -np.asarray(grad) * (Hartree / Bohr)
    return Result(energy * Hartree, forces, None, bool(mf.converged), 0.0,
                  {"density_fit": settings.density_fit})


def _molecular_ccsd_t(atoms: Atoms, level: Level, settings: Settings) -> Result:
    from pyscf import cc, scf
    from pyscf.data.elements import chemcore

    mol = _molecule(atoms, level.basis)
    mf = scf.RHF(mol) if mol.spin == 0 else scf.UHF(mol)
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    mf.kernel()
    frozen = chemcore(mol) if settings.frozen_core else 0
    mycc = cc.CCSD(mf, frozen=frozen)
    mycc.kernel()
    e_t = mycc.ccsd_t()
    energy = (mf.e_tot + mycc.e_corr + e_t) * Hartree
    converged = bool(mf.converged and mycc.converged)
    return Result(float(energy), None, None, converged, 0.0, {"frozen_core_orbitals": int(frozen)})


def check_level(atoms: Atoms, level: Level, settings: Settings | None = None, where: str = "") -> None:
    """Raise ``LevelError`` unless ``level`` can be set up for ``atoms``; runs no SCF (milliseconds).

    Builds the pyscf ``Mole`` (molecules) or ``Cell`` (periodic; with the pseudopotential) of
    ``atoms`` with the level's basis, so an unknown basis or pseudopotential name, or a basis without
    an element of ``atoms``, is found before any worker starts. Charge, spin and unsupported
    method/system pairs are per-frame problems (recorded in the frame), not checked here.
    ``where`` names the frame in the message.
    """
    settings = settings or Settings()
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.all() and pbc.any():
        return  # partially periodic: recorded as a failed frame, not a level problem
    symbols = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    nelec = int(atoms.get_atomic_numbers().sum())
    prefix = f"level {level.name}" + (f" ({where})" if where else "")
    if pbc.all() and level.method not in XC_NAMES:
        return  # an unsupported method/system pair: recorded per frame (a file may mix both kinds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyscf suggests basis-set-exchange for unknown names
        try:
            if pbc.all():
                from pyscf.pbc import gto as pbcgto

                cell = pbcgto.Cell()
                cell.atom, cell.a, cell.unit = symbols, np.asarray(atoms.cell[:]), "Angstrom"
                cell.basis, cell.pseudo, cell.ke_cutoff = level.basis, settings.pseudo, settings.ke_cutoff
                cell.spin, cell.verbose = nelec % 2, 0
                cell.build()
            else:
                from pyscf import gto

                gto.M(atom=symbols, basis=level.basis, unit="Angstrom", spin=nelec % 2, verbose=0)
        except Exception as exc:  # noqa: BLE001 - pyscf raises RuntimeError/KeyError/... for bad names
            text = " ".join(str(exc).split()) or type(exc).__name__
            if "pseudo" in text.lower():
                what = f"unknown pseudopotential {settings.pseudo!r} (--pseudo)"
            elif "not found for" in text:
                what = f"basis {level.basis!r} does not cover every element of the frame"
            elif "basis" in text.lower():
                what = f"unknown basis {level.basis!r}"
                if pbc.all():
                    what += " (periodic cells need a GTH basis, e.g. gth-szv, gth-dzvp)"
            else:
                what = f"cannot build the {'cell' if pbc.all() else 'molecule'} with basis {level.basis!r}"
            raise LevelError(f"{prefix}: {what}: pyscf says: {text}") from None


def _kmesh(atoms: Atoms, settings: Settings) -> tuple[int, int, int]:
    if settings.kmesh is not None:
        return tuple(int(k) for k in settings.kmesh)  # type: ignore[return-value]
    if "kmesh" in atoms.info:  # "2 2 2" or [2, 2, 2] (extxyz reads the string back as an array)
        raw = atoms.info["kmesh"]
        values = raw.split() if isinstance(raw, str) else np.ravel(raw)
        return tuple(int(k) for k in values)  # type: ignore[return-value]
    return (2, 2, 2)


#: Second SCF attempt of a periodic cell whose DIIS did not converge in ``max_cycle`` cycles: from the
#: last density, virtual levels shifted up (Hartree) and Fock matrices damped for the first cycles.
#: Neither changes a converged solution (the shift acts on the virtual space only), only the path.
RETRY_LEVEL_SHIFT = 0.2
RETRY_DAMP = 0.5


def _stabilised_scf(mf, settings: Settings) -> float:  # type: ignore[no-untyped-def]
    """Rerun ``mf`` (a k-point SCF that did not converge) from its last density with a level shift
    and damping; returns the energy (Hartree) and leaves ``mf.converged`` set."""
    dm = mf.make_rdm1()
    mf.level_shift = RETRY_LEVEL_SHIFT
    mf.damp = RETRY_DAMP
    mf.diis_start_cycle = 8  # pyscf damps only before DIIS starts
    return float(mf.kernel(dm0=dm))


def _periodic_dft(atoms: Atoms, level: Level, settings: Settings) -> Result:
    from pyscf.pbc import dft as pbcdft
    from pyscf.pbc import gto as pbcgto
    from pyscf.pbc.scf.smearing import smearing

    from mfjax.label.pbc_fast import (  # imports pyscf: lazily, like above
        CachedKNumInt,
        Gradients,
    )

    if level.method not in XC_NAMES:
        raise ValueError(f"{level.method} is not available for periodic cells (DFT only)")
    spin, charge = _spin_and_charge(atoms)
    if spin != 0 or charge != 0:
        raise ValueError("periodic cells must be neutral and closed shell")
    cell = pbcgto.Cell()
    cell.atom = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell.a = np.asarray(atoms.cell[:])
    cell.unit = "Angstrom"
    cell.basis = level.basis
    cell.pseudo = settings.pseudo
    cell.ke_cutoff = settings.ke_cutoff
    cell.verbose = 0
    cell.build()
    kmesh = _kmesh(atoms, settings)
    mf = pbcdft.KRKS(cell, cell.make_kpts(list(kmesh)))
    if settings.smearing > 0:
        mf = smearing(mf, sigma=settings.smearing, method="fermi")
    mf.xc = XC_NAMES[level.method]
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    numint = CachedKNumInt(settings.ao_cache_mb)
    mf._numint = mf.with_df._numint = numint  # J (FFTDF) and XC share it
    energy = float(mf.kernel())
    retried = not mf.converged
    if retried:  # DIIS oscillating: continue from the last density with a level shift and damping
        energy = _stabilised_scf(mf, settings)
    if settings.smearing > 0:
        energy = float(mf.e_free)  # E - sigma*S: forces and stress below are its derivatives
    numint.clear(stop=True)  # the gradients' loops are other ones: free the memory before them
    forces = stress = None
    if mf.converged:
        grad = Gradients(mf)  # pyscf's KRKS gradients and stress, local-PP force term done once
        if level.method == "pbe":  # pyscf.pbc has no analytic meta-GGA nuclear gradients
            forces = -np.asarray(grad.kernel()) * (Hartree / Bohr)
        sigma = np.asarray(grad.get_stress()) * (Hartree / Bohr**3)  # 1/V dE/de: ASE's sign already
        sigma = 0.5 * (sigma + sigma.T)
        stress = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]])
    extra = {"kmesh": " ".join(str(k) for k in kmesh), "ke_cutoff": settings.ke_cutoff,
             "pseudo": settings.pseudo}
    if settings.smearing > 0:
        extra["smearing"] = f"fermi {settings.smearing:g} Ha (energy: free energy E - sigma*S)"
    if retried:
        extra["scf_retry"] = f"level_shift {RETRY_LEVEL_SHIFT} Ha, damp {RETRY_DAMP}"
    return Result(energy * Hartree, forces, stress, bool(mf.converged), 0.0, extra)


def compute(atoms: Atoms, level: Level, settings: Settings | None = None) -> Result:
    """Label one structure at ``level``. Periodic iff all three ``atoms.pbc`` are true.

    Raises ValueError for partially periodic structures and unsupported method/system pairs.
    """
    settings = settings or Settings()
    pbc = np.asarray(atoms.pbc, dtype=bool)
    start = time.perf_counter()
    if pbc.all():
        result = _periodic_dft(atoms, level, settings)
    elif not pbc.any():
        if level.method == "ccsd(t)":
            result = _molecular_ccsd_t(atoms, level, settings)
        else:
            result = _molecular_dft(atoms, level, settings)
    else:
        raise ValueError(f"partially periodic structures are not supported (pbc={pbc.tolist()})")
    result.wall_time_s = time.perf_counter() - start
    return result


def code_version() -> str:
    """The code string recorded with every frame, e.g. ``pyscf 2.14.0``."""
    import pyscf

    return f"pyscf {pyscf.__version__}"
