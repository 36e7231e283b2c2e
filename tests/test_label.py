"""Tests of mfjax.label: levels, units and signs, the resumable runner, the CLI."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.units import Bohr, Hartree

from mfjax.errors import DataError

pytest.importorskip("pyscf")

from pyscf.pbc import dft as pbcdft  # noqa: E402
from pyscf.pbc import gto as pbcgto  # noqa: E402

from mfjax.data.report import DataWarning  # noqa: E402
from mfjax.label import (  # noqa: E402
    LevelError,
    Settings,
    compute,
    label_file,
    label_frames,
    parse_level,
    read_output,
)
from mfjax.label.cli import main as label_main  # noqa: E402
from mfjax.label.levels import _stabilised_scf  # noqa: E402
from mfjax.label.runner import labelled_atoms, one_line  # noqa: E402
from mfjax.label.sampling import bond_graph, strained_cells  # noqa: E402

LEVEL = parse_level("pbe/sto-3g")


def water(shift: float = 0.0) -> Atoms:
    atoms = Atoms("OH2", positions=[[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
    atoms.positions[1, 1] += shift
    return atoms


@pytest.fixture
def water_file(tmp_path: Path) -> Path:
    path = tmp_path / "water.xyz"
    ase.io.write(path, [water(), water(0.05)], format="extxyz")
    return path


def test_parse_level() -> None:
    assert parse_level("PBE/def2-SVP").name == "pbe/def2-svp"
    assert parse_level("CCSD(T)/cc-pVDZ").default_fidelity == "ccsdt"
    assert parse_level("ccsdt/cc-pvdz").method == "ccsd(t)"
    for bad in ["pbe", "b3lyp/def2-svp", "pbe/"]:
        with pytest.raises(ValueError):
            parse_level(bad)


def test_forces_are_minus_energy_gradient_in_ev() -> None:
    atoms = water(0.02)
    res = compute(atoms, LEVEL)
    assert res.converged and res.forces is not None and res.stress is None
    assert -2100 < res.energy < -2000  # water total energy ~ -75.2 Ha ~ -2047 eV
    h = 1e-3
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[1, 1] += sign * h
        energies.append(compute(moved, LEVEL).energy)
    fd_force = -(energies[0] - energies[1]) / (2 * h)
    assert abs(fd_force - res.forces[1, 1]) < 2e-3


def test_rerun_reproduces_and_resume_skips(water_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.extxyz"
    first = label_file(water_file, [LEVEL], out, progress=False)
    assert (first.n_done, first.n_skipped) == (2, 0)
    frames = ase.io.read(out, ":")
    assert sorted(str(a.info["structure_id"]) for a in frames) == ["0", "1"]
    for a in frames:
        assert a.info["fidelity"] == "pbe" and a.info["method"] == "pbe"
        assert a.info["basis"] == "sto-3g" and a.info["code"].startswith("pyscf ")
        assert a.info["scf_converged"] is True and a.info["wall_time_s"] > 0
        assert a.get_forces().shape == (3, 3)
    text = out.read_text()
    again = label_file(water_file, [LEVEL], out, progress=False)
    assert (again.n_done, again.n_skipped) == (0, 2)
    assert out.read_text() == text  # nothing appended

    # resume after an interruption: keep only the first frame, rerun computes only the second
    partial = tmp_path / "partial.extxyz"
    ase.io.write(partial, frames[0], format="extxyz")
    resumed = label_file(water_file, [LEVEL], partial, progress=False)
    assert (resumed.n_done, resumed.n_skipped) == (1, 1)
    redone = {str(a.info["structure_id"]): a.get_potential_energy() for a in ase.io.read(partial, ":")}
    for a in frames:
        assert abs(redone[str(a.info["structure_id"])] - a.get_potential_energy()) < 1e-6


def test_unconverged_frame_is_kept_and_marked(tmp_path: Path) -> None:
    out = tmp_path / "bad.extxyz"
    summary = label_frames([water(0.3)], [LEVEL], out, settings=Settings(max_cycle=1), progress=False)
    assert summary.n_unconverged == 1
    (frame,) = ase.io.read(out, ":")
    assert frame.info["scf_converged"] is False
    assert np.isfinite(frame.info["scf_energy_unconverged"])  # kept for inspection, not a label
    assert frame.calc is None  # no energy/forces label from an unconverged density


def test_energy_only_level_has_no_forces_and_several_levels(tmp_path: Path) -> None:
    out = tmp_path / "two.extxyz"
    levels = [LEVEL, parse_level("ccsd(t)/sto-3g")]
    summary = label_frames([water()], levels, out, fidelities=["lo", "hi"], progress=False)
    assert summary.n_done == 2
    by_fid = {a.info["fidelity"]: a for a in ase.io.read(out, ":")}
    assert set(by_fid) == {"lo", "hi"}
    assert by_fid["hi"].info["method"] == "ccsd(t)"
    with pytest.raises(PropertyNotImplementedError):
        by_fid["hi"].get_forces()
    assert by_fid["lo"].get_forces().shape == (3, 3)
    assert by_fid["hi"].get_potential_energy() > by_fid["lo"].get_potential_energy()


def test_failed_calculation_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "fail.extxyz"
    slab = water()
    slab.pbc = [True, True, False]  # partially periodic: unsupported
    slab.cell = [5, 5, 5]
    summary = label_frames([slab], [LEVEL], out, progress=False)
    assert summary.n_failed == 1
    assert (summary.n_done, summary.n_unconverged, summary.n_written) == (0, 0, 1)  # failed is not labelled
    assert summary.first_error is not None and "partially periodic" in summary.first_error
    (frame,) = ase.io.read(out, ":")
    assert frame.info["scf_converged"] is False and "partially periodic" in frame.info["label_error"]
    assert frame.calc is None


def test_label_error_is_one_readable_line(tmp_path: Path) -> None:
    message = 'RuntimeError: basis "x" failed\n  second line\twith tab \\ and backslash'
    assert one_line(message) == "RuntimeError: basis 'x' failed second line with tab / and backslash"
    out = tmp_path / "err.extxyz"
    frames = [labelled_atoms(water(), LEVEL, "pbe", None, message),
              labelled_atoms(water(0.1), LEVEL, "pbe", None, "x" * 1000)]
    ase.io.write(out, frames, format="extxyz")
    back = ase.io.read(out, ":")  # a newline in the comment line would break the file
    assert back[0].info["label_error"] == one_line(message)
    assert len(back[1].info["label_error"]) <= 400 and len(out.read_text().splitlines()) == 2 * 5


def test_unknown_basis_stops_before_any_calculation(water_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "never.extxyz"
    with pytest.raises(LevelError, match=r"unknown basis 'def2-svpx'"):
        label_frames([water()], [LEVEL, parse_level("pbe/def2-svpx")], out, fidelities=["a", "b"], progress=False)
    assert not out.exists()
    rc = label_main([str(water_file), "--level", "pbe/def2-svpx", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and "def2-svpx" in err and "water.xyz" in err
    with pytest.raises(LevelError, match=r"one distinct fidelity name per level"):
        label_frames([water()], [LEVEL, LEVEL], out, progress=False)
    cell = bulk("Si", "diamond", a=5.43)
    with pytest.raises(LevelError, match=r"pseudopotential 'gth-nope'"):
        label_frames([water(), cell], [parse_level("pbe/gth-szv")], out, settings=Settings(pseudo="gth-nope"),
                     progress=False)


def test_truncated_output_is_repaired_on_rerun(water_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.extxyz"
    label_file(water_file, [LEVEL], out, progress=False)
    full = out.read_text()
    first = full[: full.index("\n3\n") + 1]  # the text of frame 0
    energies = {str(a.info["structure_id"]): a.get_potential_energy() for a in ase.io.read(out, ":")}
    for cut in (len(full) - 1, len(full) - 30, len(first) + 2, len(first) + 40):  # killed mid-write
        out.write_text(full[:cut])
        with pytest.warns(DataWarning, match=r"dropped 1 incomplete frame\(s\).*kept 1"):
            frames = read_output(out)
        assert len(frames) == 1 and out.read_text() == first  # rewritten: complete frames, byte for byte
    out.write_text(full[: len(full) - 30])
    with pytest.warns(DataWarning, match="dropped 1"):
        again = label_file(water_file, [LEVEL], out, progress=False)
    assert (again.n_done, again.n_skipped) == (1, 1)
    redone = {str(a.info["structure_id"]): a.get_potential_energy() for a in ase.io.read(out, ":")}
    assert redone.keys() == energies.keys()
    assert all(abs(redone[k] - energies[k]) < 1e-6 for k in energies)
    foreign = tmp_path / "foreign.extxyz"
    ase.io.write(foreign, water(), format="extxyz")
    with pytest.raises(DataError, match=r"frame 0, field 'structure_id'"):
        label_file(water_file, [LEVEL], foreign, progress=False)


def test_parallel_workers(water_file: Path, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "s.extxyz", tmp_path / "p.extxyz"
    label_file(water_file, [LEVEL], serial, progress=False)
    label_file(water_file, [LEVEL], parallel, workers=2, threads_per_worker=1, progress=False)
    e_s = {str(a.info["structure_id"]): a.get_potential_energy() for a in ase.io.read(serial, ":")}
    e_p = {str(a.info["structure_id"]): a.get_potential_energy() for a in ase.io.read(parallel, ":")}
    assert e_s.keys() == e_p.keys()
    assert all(abs(e_s[k] - e_p[k]) < 1e-6 for k in e_s)


def test_cli(water_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.extxyz"
    argv = [str(water_file), "--level", "pbe/sto-3g", "--out", str(out), "--fidelity", "low",
            "--index", "0", "--no-progress"]
    assert label_main(argv) == 0
    (frame,) = ase.io.read(out, ":")
    assert frame.info["fidelity"] == "low"
    assert label_main([str(water_file), "--level", "nope/x", "--out", str(out)]) == 2
    bad = [str(water_file), "--level", "pbe/sto-3g", "--out", str(tmp_path / "b.extxyz"),
           "--max-cycle", "1", "--index", "1", "--no-progress"]
    assert label_main(bad) == 1  # unconverged frame kept, reported by the exit status


def test_cli_summary_counts_a_failed_frame_once(tmp_path: Path, capsys) -> None:
    slab = water()
    slab.pbc, slab.cell = [True, True, False], [5, 5, 5]
    path = tmp_path / "slab.xyz"
    ase.io.write(path, [slab], format="extxyz")
    assert label_main([str(path), "--level", "pbe/sto-3g", "--out", str(tmp_path / "o.extxyz"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "0 labelled, 0 already done, 0 unconverged, 1 failed" in out
    assert "first error: ValueError: partially periodic" in out


def _fd_force_x(cell: Atoms, level, settings: Settings, h: float = 2e-3) -> float:
    """-dE/dx of atom 1 by central differences (eV/Å)."""
    moved = [cell.copy(), cell.copy()]
    moved[0].positions[1, 0] += h
    moved[1].positions[1, 0] -= h
    e_plus, e_minus = (compute(m, level, settings).energy for m in moved)
    return -(e_plus - e_minus) / (2 * h)


def _fd_mean_stress(cell: Atoms, level, settings: Settings, eps: float = 1e-3) -> float:
    """1/V dE/d(isotropic strain) / 3 by central differences (eV/Å^3, ASE sign)."""
    energies = []
    for sign in (1, -1):
        strained = cell.copy()
        strained.set_cell(cell.cell[:] * (1 + sign * eps), scale_atoms=True)
        energies.append(compute(strained, level, settings).energy)
    return (energies[0] - energies[1]) / (2 * eps) / cell.get_volume() / 3


def _pyscf_cell(atoms: Atoms, basis: str, ke_cutoff: float):
    """A pyscf.pbc Cell of ``atoms`` built directly (gth-pbe, Å), bypassing mfjax.label."""
    cell = pbcgto.Cell()
    cell.atom = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    cell.a, cell.unit, cell.basis, cell.pseudo, cell.ke_cutoff, cell.verbose = \
        np.asarray(atoms.cell[:]), "Angstrom", basis, "gth-pbe", ke_cutoff, 0
    cell.build()
    return cell


@pytest.mark.slow
def test_periodic_stress_sign_and_forces() -> None:
    """pbc PBE: stress = 1/V dE/d(strain) (ASE sign) and forces = -dE/dR, against finite differences."""
    cell = bulk("Si", "diamond", a=5.6)
    cell.positions[1] += [0.05, -0.03, 0.02]
    settings = Settings(kmesh=(1, 1, 1), ke_cutoff=25.0)
    level = parse_level("pbe/gth-szv")
    res = compute(cell, level, settings)
    assert res.converged and res.forces is not None and res.stress is not None
    fd_mean_stress = _fd_mean_stress(cell, level, settings)
    assert abs(fd_mean_stress - res.stress[:3].mean()) < 2e-4 * max(1.0, abs(fd_mean_stress) * 1e3)
    assert abs(_fd_force_x(cell, level, settings) - res.forces[1, 0]) < 5e-3


@pytest.mark.slow
def test_periodic_fast_path_is_pyscf() -> None:
    """The labeller's cell path (mfjax.label.pbc_fast: AO values cached across SCF cycles, the
    local-pseudopotential force term done once on the grid) gives pyscf's own KRKS numbers."""
    atoms = bulk("SiC", "zincblende", a=4.38)
    atoms.positions[1] += [0.05, -0.03, 0.02]
    res = compute(atoms, parse_level("pbe/gth-szv"), Settings(kmesh=(2, 1, 1), ke_cutoff=25.0, conv_tol=1e-10))
    cell = _pyscf_cell(atoms, "gth-szv", 25.0)
    mf = pbcdft.KRKS(cell, cell.make_kpts([2, 1, 1]))
    mf.xc, mf.conv_tol = "pbe", 1e-10
    energy = mf.kernel() * Hartree
    grad = mf.nuc_grad_method()
    forces = -grad.kernel() * (Hartree / Bohr)
    sigma = grad.get_stress() * (Hartree / Bohr**3)
    sigma = 0.5 * (sigma + sigma.T)
    assert res.converged and abs(res.energy - energy) < 1e-6
    np.testing.assert_allclose(res.forces, forces, atol=1e-5)
    np.testing.assert_allclose(res.stress, sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=1e-7)


@pytest.mark.slow
def test_smeared_cell_forces_and_stress_are_free_energy_derivatives() -> None:
    """Fermi smearing (Settings.smearing): the energy label is the free energy E - sigma*S, and the
    forces and stress are its derivatives (finite differences; a wide sigma makes the occupations
    fractional, so E alone would not match)."""
    cell = bulk("Si", "diamond", a=5.6)
    cell.positions[1] += [0.05, -0.03, 0.02]
    settings = Settings(kmesh=(2, 1, 1), ke_cutoff=25.0, smearing=0.03, conv_tol=1e-11)
    level = parse_level("pbe/gth-szv")
    res = compute(cell, level, settings)
    assert res.converged and res.extra["smearing"].startswith("fermi 0.03 Ha")
    assert abs(_fd_force_x(cell, level, settings) - res.forces[1, 0]) < 1e-4
    assert abs(_fd_mean_stress(cell, level, settings) - res.stress[:3].mean()) < 1e-5
    plain = compute(cell, level, Settings(kmesh=(2, 1, 1), ke_cutoff=25.0, conv_tol=1e-11))
    assert abs(plain.forces[1, 0] - res.forces[1, 0]) > 0.1  # the smearing matters at this width


def test_stalled_periodic_scf_is_continued_to_the_same_solution() -> None:
    """A cell SCF stopped short (here after 2 cycles) continues from its density with a level shift
    and damping (levels._stabilised_scf) and lands on the plain SCF's energy and orbitals."""
    atoms = bulk("Si", "diamond", a=5.6)
    atoms.positions[1] += [0.05, -0.03, 0.02]
    cell = _pyscf_cell(atoms, "gth-szv", 20.0)
    runs = []
    for cycles in (2, 60):
        mf = pbcdft.KRKS(cell, cell.make_kpts([1, 1, 1]))
        mf.xc, mf.conv_tol, mf.max_cycle = "pbe", 1e-10, cycles
        runs.append((mf, mf.kernel()))
    (stalled, _), (plain, energy) = runs
    assert not stalled.converged and plain.converged
    stalled.max_cycle = 60
    assert abs(_stabilised_scf(stalled, Settings()) - energy) < 1e-8 and stalled.converged
    np.testing.assert_allclose(stalled.mo_energy[0], plain.mo_energy[0], atol=1e-6)  # unshifted levels


@pytest.mark.slow
def test_r2scan_periodic_has_stress_but_no_forces() -> None:
    cell = bulk("Si", "diamond", a=5.6)
    res = compute(cell, parse_level("r2scan/gth-szv"), Settings(kmesh=(1, 1, 1), ke_cutoff=25.0))
    assert res.converged and res.forces is None and res.stress is not None and res.stress.shape == (6,)


def test_sampling_helpers() -> None:
    prim = bulk("Si", "diamond", a=5.43)
    cells = strained_cells(prim, 3, max_strain=0.02, rattle_std=0.01, seed=1)
    again = strained_cells(prim, 3, max_strain=0.02, rattle_std=0.01, seed=1)
    for a, b in zip(cells, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.info["max_strain"] <= 0.02
        assert abs(a.get_volume() / prim.get_volume() - 1) < 0.07
    assert bond_graph(water()) == frozenset({(0, 1), (0, 2)})
