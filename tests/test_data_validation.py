"""One test per bad input: the error (or warning) names the file, the frame and the field."""

from __future__ import annotations

import warnings

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mfjax.config import LabelKeys
from mfjax.data.io import read_structures
from mfjax.data.report import DatasetReport, DataWarning
from mfjax.data.validation import energy_unit_warnings
from mfjax.data.structures import Structure
from mfjax.errors import DataError

HEADER = 'Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy={e} pbc="T T T"'


def _frame(e: str = "-1.0", rows: tuple[str, ...] = ("H 0 0 0 0.1 0 0", "H 0 0 1 -0.1 0 0"), header: str = HEADER) -> str:
    return f"{len(rows)}\n{header.format(e=e)}\n" + "\n".join(rows) + "\n"


def _write(tmp_path, *frames: str, name: str = "bad.extxyz") -> str:
    path = tmp_path / name
    path.write_text("".join(frames))
    return str(path)


def _raises(path: str, frame: int | None, field: str | None, match: str = "", **kwargs) -> DataError:
    kwargs.setdefault("fidelity", "pbe")
    with pytest.raises(DataError, match=match) as info:
        read_structures(path, **kwargs)
    message = str(info.value)
    assert path in message
    if frame is not None:
        assert f"frame {frame}" in message and info.value.frame == frame
    if field is not None:
        assert f"field {field!r}" in message and info.value.field == field
    return info.value


def _atoms_file(tmp_path, atoms_list, name="bad.extxyz") -> str:
    path = str(tmp_path / name)
    ase.io.write(path, atoms_list)
    return path


# ---- files --------------------------------------------------------------------------------------
def test_unreadable_paths(tmp_path):
    _raises(str(tmp_path / "missing.extxyz"), None, None, "does not exist")
    _raises(str(tmp_path), None, None, "not a regular file")
    _raises(_write(tmp_path, name="empty.extxyz"), None, None, "file is empty")


def test_truncated_extxyz_names_frame(tmp_path):
    text = _frame() + _frame() + _frame()
    path = _write(tmp_path, text[: len(text) - 12])
    _raises(path, 2, None, "truncated or malformed")


def test_malformed_extxyz_names_frame(tmp_path):
    path = _write(tmp_path, _frame(), _frame(rows=("H 0 0 0 0 0 0", "H 0 zero 1 0 0 0")))
    _raises(path, 1, None, "cannot parse")


# ---- labels -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_energy(tmp_path, bad):
    _raises(_write(tmp_path, _frame(), _frame(e=bad)), 1, "energy", "NaN or inf")


def test_non_finite_forces(tmp_path):
    _raises(_write(tmp_path, _frame(rows=("H 0 0 0 nan 0 0", "H 0 0 1 0 0 0"))), 0, "forces", "NaN or inf")


def test_non_finite_stress(tmp_path, make_atoms):
    a = make_atoms("H2", seed=0)
    a.info["REF_stress"] = np.array([0.1, np.inf, 0, 0, 0, 0])
    _raises(_atoms_file(tmp_path, [a]), 0, "REF_stress", "NaN or inf", keys=LabelKeys(stress="REF_stress"))


def test_forces_wrong_shape(tmp_path):
    header = HEADER.replace("forces:R:3", "forces:R:2")
    path = _write(tmp_path, _frame(), _frame(rows=("H 0 0 0 1 1", "H 0 0 1 1 1"), header=header))
    _raises(path, 1, "forces", r"expected shape \(2, 3\)")


def test_stress_wrong_shape(tmp_path, make_atoms):
    a = make_atoms("H2", seed=0)
    a.info["REF_stress"] = np.array([1.0, 2.0, 3.0, 4.0])
    _raises(_atoms_file(tmp_path, [a]), 0, "REF_stress", "Voigt", keys=LabelKeys(stress="REF_stress"))


def test_stress_on_molecule_is_masked_with_warning(tmp_path, make_atoms):
    a = make_atoms("H2O", periodic=False, seed=0)
    a.calc = SinglePointCalculator(a, energy=-1.0, stress=np.ones(6))
    path = _atoms_file(tmp_path, [make_atoms("H2O", periodic=False, seed=1), a])
    with pytest.warns(DataWarning, match=rf"{path}, frame 1, field 'stress': stress given for a frame that is not periodic"):
        out = read_structures(path, fidelity="pbe")
    assert out[1].stress is None and out[1].energy == -1.0


# ---- identity -----------------------------------------------------------------------------------
def test_unknown_element(tmp_path, make_atoms):
    path = _atoms_file(tmp_path, [make_atoms("CH4", seed=0), make_atoms("CH3Cl", seed=1)])
    _raises(path, 1, "numbers", r"Cl \(Z=17\) not in the model's species", species=(1, 6))


def test_invalid_atomic_number(tmp_path, make_atoms):
    a = make_atoms("CH4", seed=0)
    a.numbers[2] = 0
    _raises(_atoms_file(tmp_path, [a]), 0, "numbers", r"invalid atomic number\(s\) \[0\]")


def test_missing_fidelity(tmp_path, make_atoms):
    frames = [make_atoms("CH4", seed=k) for k in range(2)]
    frames[0].info["fidelity"] = "pbe"
    _raises(_atoms_file(tmp_path, frames), 1, "fidelity", "no fidelity", fidelity=None)


def test_fidelity_not_in_list(tmp_path, make_atoms):
    a = make_atoms("CH4", seed=0)
    a.info["fidelity"] = "b3lyp"
    _raises(_atoms_file(tmp_path, [a]), 0, "fidelity", r"'b3lyp' is not one of \['pbe', 'r2scan'\]",
            fidelity=None, fidelities=("pbe", "r2scan"))


# ---- geometry -----------------------------------------------------------------------------------
def test_zero_volume_cell(tmp_path, make_atoms):
    a = make_atoms("CH4", seed=0)
    a.cell = [[3, 0, 0], [0, 3, 0], [3, 3, 0]]
    _raises(_atoms_file(tmp_path, [make_atoms("CH4", seed=1), a]), 1, "cell", "zero cell volume")


def test_negative_volume_cell(tmp_path, make_atoms):
    a = make_atoms("CH4", seed=0)
    a.cell = -np.eye(3) * 4.0
    _raises(_atoms_file(tmp_path, [a]), 0, "cell", "negative")


def test_non_finite_positions(tmp_path):
    _raises(_write(tmp_path, _frame(rows=("H nan 0 0 0 0 0", "H 0 0 1 0 0 0"))), 0, "positions", "NaN or inf")


def test_atoms_too_close(tmp_path, make_atoms):
    a = make_atoms("CH4", periodic=False, seed=0)
    a.positions[3] = a.positions[1] + [0.05, 0.0, 0.0]
    _raises(_atoms_file(tmp_path, [a]), 0, "positions", r"atom 1 is 0\.0500 Å from atom 3")


def test_atoms_too_close_through_periodic_image(tmp_path):
    a = ase.Atoms("H2", positions=[[0.02, 1, 1], [3.95, 1, 1]], cell=np.eye(3) * 4.0, pbc=True)
    a.calc = SinglePointCalculator(a, energy=-1.0)
    _raises(_atoms_file(tmp_path, [a]), 0, "positions", r"0\.0700 Å")


def test_isolated_atom_warning(tmp_path, make_atoms):
    a = make_atoms("CH4", periodic=False, seed=0)
    a.positions[4] += [20.0, 0.0, 0.0]
    path = _atoms_file(tmp_path, [make_atoms("CH4", periodic=False, seed=1), a])
    with pytest.warns(DataWarning, match=rf"{path}, frame 1, field 'positions': atoms with no neighbour within the cutoff 4.0"):
        out = read_structures(path, fidelity="pbe", cutoff=4.0)
    assert len(out) == 2


def test_hartree_energies_warn_but_ev_energies_do_not():
    from mfjax.data.validation import HARTREE, atomic_energy_estimate

    rng = np.random.default_rng(0)
    frames_ha, frames_ev, frames_pp = [], [], []
    for k in range(12):
        species = rng.choice([1, 6, 7, 8], size=rng.integers(3, 12))
        e_ha = float(atomic_energy_estimate(species).sum()) - 0.1 * len(species)  # binding ~ 0.1 Ha/atom
        base = dict(positions=np.zeros((len(species), 3)), cell=np.zeros((3, 3)), pbc=np.zeros(3, bool), fidelity="hf",
                    species=species, index=k, source="mol.extxyz")
        frames_ha.append(Structure(energy=e_ha, **base))
        frames_ev.append(Structure(energy=e_ha * HARTREE, **base))
        frames_pp.append(Structure(energy=-5.0 * len(species), **base))  # VASP-like per-atom energies
    assert any("Hartree" in w for w in energy_unit_warnings(frames_ha))
    assert energy_unit_warnings(frames_ev) == []
    assert energy_unit_warnings(frames_pp) == []
    mev = [Structure(**{**vars(s), "energy": s.energy * 1000.0}) for s in frames_pp]  # eV -> meV
    assert any("not eV" in w for w in energy_unit_warnings(mev))


def test_hartree_warning_names_file_and_field(tmp_path, make_atoms):
    frames = []
    for k in range(5):
        a = make_atoms("CH4", periodic=False, seed=k)
        a.calc = SinglePointCalculator(a, energy=-40.4 - 0.01 * k)  # methane in Hartree
        frames.append(a)
    path = _atoms_file(tmp_path, frames)
    with pytest.warns(DataWarning, match=rf"{path}, field 'energy': fidelity 'pbe': total energies look like all-electron energies in Hartree"):
        read_structures(path, fidelity="pbe")


def test_exclude_mode_accounts_for_every_frame(tmp_path):
    path = _write(tmp_path, _frame(), _frame(e="nan"), _frame(), _frame(rows=("H 0 0 0 0 0 0", "H 0 0 0.05 0 0 0")))
    report = DatasetReport(source=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out = read_structures(path, fidelity="pbe", on_error="exclude", report=report)
    assert [s.index for s in out] == [0, 2]
    assert report.frames_read == 4 and report.used == 2
    assert report.excluded == {"invalid energy": 1, "invalid positions": 1}
    assert [f for f, _ in report.excluded_frames] == [1, 3]
    assert all(path in why for _, why in report.excluded_frames)
    assert report.totals_ok()


# ---- fuzz ---------------------------------------------------------------------------------------
def _corrupt(text: str, rng: np.random.Generator) -> str:
    lines = text.splitlines(keepends=True)
    op = rng.integers(7)
    pos = int(rng.integers(len(text)))
    k = int(rng.integers(len(lines)))
    if op == 0:
        return text[:pos]
    if op == 1:
        return text[:pos] + text[pos + int(rng.integers(1, 8)) :]
    if op == 2:
        return text[:pos] + str(rng.choice(["nan", "inf", "x", "-", "1e999", '"', "=", " ", "\n", "Xx", "0"])) + text[pos:]
    if op == 3:
        return "".join(lines[:k] + lines[k + 1 :])
    if op == 4:
        return "".join(lines[:k] + [lines[k]] + lines[k:])
    if op == 5:
        tokens = lines[k].split(" ")
        tokens[int(rng.integers(len(tokens)))] = str(rng.choice(["nan", "", "abc", "-1", "99", "T", "1.5"]))
        return "".join(lines[:k] + [" ".join(tokens)] + lines[k + 1 :])
    return text.replace(str(rng.choice(["pbc=", "Lattice=", "energy=", "forces", "species", "pos"])), str(rng.choice(["", "stress=", "q="])), 1)


def test_fuzz_corrupted_extxyz_is_clean_error_or_valid_load(tmp_path, make_atoms):
    frames = []
    for k in range(3):
        a = make_atoms("CH2O", seed=k)
        a.info["fidelity"] = "pbe"
        frames.append(a)
    clean = str(tmp_path / "clean.extxyz")
    ase.io.write(clean, frames)
    text = open(clean).read()
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    for variant in range(50):
        path = _write(tmp_path, _corrupt(text, rng), name=f"fuzz{variant}.extxyz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = read_structures(path, cutoff=3.0)
            except DataError as exc:
                assert path in str(exc)
                outcomes["error"] += 1
                continue
        assert all(np.all(np.isfinite(s.positions)) for s in out)
        assert all(s.energy is None or np.isfinite(s.energy) for s in out)
        outcomes["ok"] += 1
    assert outcomes["error"] > 5 and outcomes["ok"] > 5, outcomes
