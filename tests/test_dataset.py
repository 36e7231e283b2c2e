"""Tests of the shipped multi-fidelity dataset (mfjax/datasets/data/)."""

from __future__ import annotations

from functools import cache

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from mfjax.datasets import available, dataset_path

FILES = {  # name -> (fidelity, minimum frame count)
    "organics_pbe": ("pbe", 1000),
    "organics_r2scan": ("r2scan", 150 + 50),
    "organics_ccsdt": ("ccsdt", 50),
    "si_pbe": ("pbe", 30),
    "si_r2scan": ("r2scan", 15),
    "organics_extra_pbe": ("pbe", 600),
    "organics_extra_r2scan": ("r2scan", 100),
    "organics_r2scan_test": ("r2scan", 172),
}
HF_MOLECULES = {"methanol", "methylamine", "formic_acid", "formaldehyde", "ethylene"}
GAP_MOLECULES = {"water", "ammonia", "acetaldehyde"}
META = ("fidelity", "method", "basis", "code", "scf_converged", "wall_time_s", "structure_id")


@cache
def frames(name: str) -> tuple[Atoms, ...]:
    return tuple(ase.io.read(dataset_path(name), ":"))


def by_id(name: str) -> dict[str, Atoms]:
    return {str(a.info["structure_id"]): a for a in frames(name)}


def test_dataset_path() -> None:
    assert dataset_path("organics_pbe") == dataset_path("organics_pbe.extxyz")
    assert set(FILES) <= set(available())
    with pytest.raises(FileNotFoundError, match="available"):
        dataset_path("nope")


@pytest.mark.parametrize("name", sorted(FILES))
def test_files_load_with_metadata_counts_and_units(name: str) -> None:
    fidelity, minimum = FILES[name]
    data = frames(name)
    assert len(data) >= minimum
    assert len(by_id(name)) == len(data)  # one frame per structure and fidelity
    for atoms in data:
        assert all(key in atoms.info for key in META)
        assert atoms.info["fidelity"] == fidelity
        if not atoms.info["scf_converged"]:  # kept and marked, with no labels
            assert atoms.calc is None and "scf_energy_unconverged" in atoms.info
            continue
        # total energies in eV: |E/N| ~ 100-1000 eV/atom (it would be ~4-40 in Hartree)
        assert -1200.0 < atoms.get_potential_energy() / len(atoms) < -50.0
    assert sum(bool(a.info["scf_converged"]) for a in data) >= 0.95 * len(data)
    assert set(np.unique(np.concatenate([a.numbers for a in data]))) <= {1, 6, 7, 8, 14}


def test_organics_labels_and_regions() -> None:
    for atoms in frames("organics_pbe") + frames("organics_r2scan"):
        forces = atoms.get_forces()
        assert forces.shape == (len(atoms), 3) and 0 < np.abs(forces).max() < 30.0
        assert atoms.info["molecule"] in HF_MOLECULES - {"formaldehyde", "ethylene"}
        covered = atoms.info["temperature_K"] <= 600
        assert atoms.info["region"] == ("covered" if covered else "uncovered")
    regions = [a.info["region"] for a in frames("organics_r2scan")]
    assert regions.count("covered") >= 150 and regions.count("uncovered") >= 45
    for atoms in frames("organics_ccsdt"):
        with pytest.raises(PropertyNotImplementedError):  # energies only, no fake forces
            atoms.get_forces()


def test_structure_ids_pair_fidelities() -> None:
    """r2SCAN and CCSD(T) geometries are PBE geometries (same id, same positions) for Delta-learning."""
    pbe = by_id("organics_pbe")
    r2 = by_id("organics_r2scan")
    for sid, atoms in list(r2.items()) + list(by_id("organics_ccsdt").items()):
        assert sid in pbe
        np.testing.assert_allclose(atoms.positions, pbe[sid].positions, atol=1e-8)
    assert set(by_id("organics_ccsdt")) <= set(r2)
    si_pbe = by_id("si_pbe")
    for sid, atoms in by_id("si_r2scan").items():
        np.testing.assert_allclose(atoms.cell[:], si_pbe[sid].cell[:], atol=1e-8)
    # the levels differ by a smooth, small shift: per-atom PBE/r2SCAN gap varies by < 1 eV/atom
    gaps = [(r2[s].get_potential_energy() - pbe[s].get_potential_energy()) / len(r2[s]) for s in r2]
    assert np.ptp(gaps) < 1.0


def test_extension_gap_and_fixed_test_set() -> None:
    """Eight molecules; the gap molecules have r2SCAN labels only in the test file; test geometries are
    unseen at every fidelity; the extra r2SCAN training frames pair with extra PBE frames."""
    pbe = {**by_id("organics_pbe"), **by_id("organics_extra_pbe")}
    train_r2 = {**by_id("organics_r2scan"), **by_id("organics_extra_r2scan")}
    test = by_id("organics_r2scan_test")
    assert {a.info["molecule"] for a in pbe.values()} == HF_MOLECULES | GAP_MOLECULES
    assert {a.info["molecule"] for a in train_r2.values()} == HF_MOLECULES
    for sid, atoms in by_id("organics_extra_r2scan").items():
        assert atoms.info["region"] == "covered"
        np.testing.assert_allclose(atoms.positions, pbe[sid].positions, atol=1e-8)
    for atoms in test.values():
        assert atoms.info["split"] == "test" and atoms.info["temperature_K"] <= 600
        gap = atoms.info["molecule"] in GAP_MOLECULES
        assert atoms.info["region"] == ("gap" if gap else "covered")
        assert 0 < np.abs(atoms.get_forces()).max() < 30.0
    assert not set(test) & (set(pbe) | set(train_r2) | set(by_id("organics_ccsdt")))
    regions = [a.info["region"] for a in test.values()]
    assert regions.count("covered") >= 100 and regions.count("gap") >= 72


def test_si_stress_and_masks() -> None:
    for atoms in frames("si_pbe"):
        if not atoms.info["scf_converged"]:
            continue
        assert atoms.pbc.all() and atoms.get_forces().shape == (2, 3)
        assert atoms.get_stress().shape == (6,)
        assert np.abs(atoms.get_stress()).max() < 0.2  # eV/A^3 (32 GPa): not Hartree/Bohr^3 nor kbar
    for atoms in frames("si_r2scan"):
        assert atoms.get_stress().shape == (6,)
        with pytest.raises(PropertyNotImplementedError):  # pyscf.pbc has no meta-GGA forces
            atoms.get_forces()


def _recompute(name: str, sid: str) -> None:
    from mfjax.label import Settings, compute, parse_level

    shipped = by_id(name)[sid]
    level = parse_level(f"{shipped.info['method']}/{shipped.info['basis']}")
    settings = Settings()
    if shipped.pbc.all():
        raw = shipped.info["kmesh"]  # "2 2 2" (extxyz may parse it to an int array)
        kmesh = tuple(int(k) for k in (raw.split() if isinstance(raw, str) else np.ravel(raw)))
        settings = Settings(kmesh=kmesh, ke_cutoff=float(shipped.info["ke_cutoff"]),
                            pseudo=str(shipped.info["pseudo"]))
    atoms = Atoms(shipped.numbers, positions=shipped.positions, cell=shipped.cell, pbc=shipped.pbc)
    result = compute(atoms, level, settings)
    assert abs(result.energy - shipped.get_potential_energy()) < 1e-6
    if result.forces is not None:
        np.testing.assert_allclose(result.forces, shipped.get_forces(), atol=1e-6)


def test_label_reproduces_shipped_pbe_frame() -> None:
    sid = next(s for s, a in by_id("organics_pbe").items() if a.info["molecule"] == "methanol")
    _recompute("organics_pbe", sid)
    water = next(s for s, a in by_id("organics_extra_pbe").items() if a.info["molecule"] == "water")
    _recompute("organics_extra_pbe", water)


@pytest.mark.slow
def test_label_reproduces_shipped_r2scan_ccsdt_and_si_frames() -> None:
    _recompute("organics_r2scan", next(iter(by_id("organics_r2scan"))))
    _recompute("organics_ccsdt", next(iter(by_id("organics_ccsdt"))))
    _recompute("organics_r2scan_test", next(s for s, a in by_id("organics_r2scan_test").items()
                                            if a.info["region"] == "gap"))
    _recompute("si_pbe", next(s for s, a in by_id("si_pbe").items() if a.info["scf_converged"]))
