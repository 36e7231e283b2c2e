"""Reading extxyz and ASE db files: labels, masks, fidelities, ids, metadata."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mfjax.config import LabelKeys
from mfjax.data.batching import structures_to_graph
from mfjax.data.io import read_structures
from mfjax.data.report import DatasetReport
from mfjax.errors import DataError


def test_extxyz_calculator_labels_and_partial_labels(tmp_path, make_atoms):
    full = make_atoms("CH4", seed=1)
    no_forces = make_atoms("CH4", seed=2)
    no_forces.calc = SinglePointCalculator(no_forces, energy=-3.0, stress=np.arange(6.0) * 0.01)
    energy_only_molecule = make_atoms("H2O", periodic=False, seed=3)
    energy_only_molecule.calc = SinglePointCalculator(energy_only_molecule, energy=-7.5)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, [full, no_forces, energy_only_molecule])

    out = read_structures(str(path), fidelity="pbe")
    assert [s.index for s in out] == [0, 1, 2]
    a, b, c = out
    assert a.energy == pytest.approx(full.get_potential_energy())
    np.testing.assert_allclose(a.forces, full.get_forces())
    # Voigt (xx yy zz yz xz xy) -> symmetric 3x3, ASE sign kept
    xx, yy, zz, yz, xz, xy = full.get_stress()
    np.testing.assert_allclose(a.stress, [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    assert b.forces is None and b.energy == -3.0 and b.stress is not None
    assert c.forces is None and c.stress is None and c.energy == -7.5
    assert not c.pbc.any() and np.all(c.cell == 0)
    assert {s.fidelity for s in out} == {"pbe"}
    assert all(s.source == str(path) for s in out)

    graph = structures_to_graph(out, 3.0, {"pbe": 0})
    assert graph.nodes.forces_mask.tolist() == [True] * 5 + [False] * 5 + [False] * 3
    assert graph.globals.energy_mask.tolist() == [True, True, True]
    assert graph.globals.stress_mask.tolist() == [True, True, False]


def test_info_keys_per_frame_fidelity_and_metadata(tmp_path, make_atoms):
    frames = []
    for k, fid in enumerate(["pbe", "r2scan", "pbe"]):
        atoms = make_atoms("SiO2", seed=k, labels=False)
        atoms.info.update({"REF_energy": -10.0 - k, "level": fid, "structure_id": 100 + k, "temperature": 300.0})
        atoms.arrays["REF_forces"] = np.full((3, 3), float(k))
        if k == 1:
            atoms.info["REF_stress"] = np.eye(3) * 0.02  # 3x3 form
        frames.append(atoms)
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, frames)
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress", fidelity="level")
    out = read_structures(str(path), keys=keys)
    assert [s.fidelity for s in out] == ["pbe", "r2scan", "pbe"]
    assert [s.energy for s in out] == [-10.0, -11.0, -12.0]
    assert [s.structure_id for s in out] == ["100", "101", "102"]
    np.testing.assert_allclose(out[2].forces, 2.0)
    np.testing.assert_allclose(out[1].stress, np.eye(3) * 0.02)
    assert out[0].stress is None
    assert out[0].info["temperature"] == 300.0
    assert "REF_energy" not in out[0].info and "level" not in out[0].info
    # the dataset fidelity overrides per-frame names
    assert {s.fidelity for s in read_structures(str(path), keys=keys, fidelity="hf")} == {"hf"}


def test_index_selection_keeps_file_frame_numbers(tmp_path, make_atoms):
    path = tmp_path / "many.extxyz"
    ase.io.write(path, [make_atoms("H2", seed=k) for k in range(7)])
    out = read_structures(str(path), fidelity="pbe", index="1::2")
    assert [s.index for s in out] == [1, 3, 5]


def test_ase_db_with_key_value_pairs(tmp_path, make_atoms):
    path = tmp_path / "data.db"
    db = ase.db.connect(str(path))
    a = make_atoms("NH3", seed=0)
    db.write(a, fidelity="r2scan", structure_id="nh3-0")
    b = make_atoms("NH3", seed=1, labels=False)
    db.write(b, fidelity="pbe", data={"energy_pbe": -4.0})
    report = DatasetReport(source=str(path))
    out = read_structures(str(path), report=report)
    assert [s.fidelity for s in out] == ["r2scan", "pbe"]
    assert out[0].structure_id == "nh3-0"
    assert out[0].energy == pytest.approx(a.get_potential_energy())
    np.testing.assert_allclose(out[0].forces, a.get_forces())
    assert out[0].stress is not None
    assert out[1].energy is None and out[1].forces is None
    assert out[1].info["energy_pbe"] == -4.0
    assert report.frames_read == 2 and report.used == 2
    assert report.per_fidelity["r2scan"].forces == 1 and report.per_fidelity["pbe"].energy == 0
    # custom energy key read from the row's data
    out = read_structures(str(path), keys=LabelKeys(energy="energy_pbe"), index="1")
    assert out[0].energy == -4.0


def test_unlabelled_frames_excluded_only_when_labels_required(tmp_path, make_atoms):
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, [make_atoms("CO", seed=0), make_atoms("CO", seed=1, labels=False)])
    assert len(read_structures(str(path), fidelity="pbe")) == 2
    report = DatasetReport(source=str(path))
    with pytest.warns(UserWarning, match=r"frame 1, field 'labels'"):
        out = read_structures(str(path), fidelity="pbe", require_labels=True, report=report)
    assert len(out) == 1 and report.excluded == {"no energy, forces or stress label": 1}
    assert report.totals_ok()


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_structures(str(tmp_path / "nope.extxyz"), fidelity="pbe")


def _stress_file(path, stress: str, lattice: str = "5 0 0 0 5 0 0 0 5") -> str:
    """Two frames; the second has the given ``stress=`` value (the first a valid Voigt-6)."""
    text = ""
    for value in ("0.1 0.2 0.3 0.0 0.0 0.0", stress):
        text += (
            "2\n"
            f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 '
            f'stress="{value}" pbc="T T T"\n'
            "H 0.0 0.0 0.0 0.0 0.0 0.1\nH 0.74 0.0 0.0 0.0 0.0 -0.1\n"
        )
    path.write_text(text)
    return str(path)


def test_extxyz_stress_voigt6_and_nine_values(tmp_path):
    """ASE's own parser rejects a 6-value ``stress=``; mfjax reads it as Voigt (xx yy zz yz xz xy)."""
    path = _stress_file(tmp_path / "s.extxyz", "1 2 3 4 5 6")
    out = read_structures(path, fidelity="x")
    np.testing.assert_allclose(out[1].stress, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
    np.testing.assert_allclose(out[0].stress, np.diag([0.1, 0.2, 0.3]))
    assert out[1].energy == -1.5 and out[1].forces.shape == (2, 3)
    path = _stress_file(tmp_path / "s9.extxyz", "1 6 5 6 2 4 5 4 3")
    np.testing.assert_allclose(read_structures(path, fidelity="x")[1].stress, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])


@pytest.mark.parametrize("value", ["1 2 3 4 5 6 7", "1 2 3", "7", "a b"])
def test_extxyz_stress_wrong_count_names_file_frame_field(tmp_path, value):
    path = _stress_file(tmp_path / "bad.extxyz", value)
    with pytest.raises(DataError, match=r"bad\.extxyz, frame 1, field 'stress': expected") as info:
        read_structures(path, fidelity="x")
    assert info.value.field == "stress" and info.value.frame == 1


def test_extxyz_lattice_wrong_count_names_the_field(tmp_path):
    path = _stress_file(tmp_path / "lat.extxyz", "1 2 3 4 5 6", lattice="5 0 0 0 5 0 0 0")
    with pytest.raises(DataError, match=r"frame 0, field 'Lattice': expected 9 numbers"):
        read_structures(path, fidelity="x")
