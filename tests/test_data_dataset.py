"""load_data: fidelities, species, splits, pairs, accounting; the check-data command."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
import yaml

from mfjax.config import DataConfig, DatasetConfig, SplitConfig, load_config
from mfjax.data.dataset import load_data, split_assignment
from mfjax.data.report import DataWarning
from mfjax.errors import DataError, FidelityError


def _write(tmp_path, name, make_atoms, n, symbols="CH4", fidelity_info=None, ids=True, seed0=0, unlabelled=()):
    frames = []
    for k in range(n):
        a = make_atoms(symbols, seed=seed0 + k, labels=k not in unlabelled)
        if ids:
            a.info["structure_id"] = f"geom{seed0 + k}"
        if fidelity_info is not None:
            a.info["fidelity"] = fidelity_info[k % len(fidelity_info)]
        frames.append(a)
    path = str(tmp_path / name)
    ase.io.write(path, frames)
    return path


def _cfg(*datasets, valid=0.2, test=0.2, seed=0):
    return DataConfig(cutoff=3.0, datasets=tuple(datasets), split=SplitConfig(valid=valid, test=test, seed=seed))


def test_load_data_fidelities_species_split_and_accounting(tmp_path, make_atoms):
    lo = _write(tmp_path, "lo.extxyz", make_atoms, 20, unlabelled=(3,))
    hi = _write(tmp_path, "hi.extxyz", make_atoms, 6, symbols="CH3OH", seed0=100, ids=False)
    test_file = _write(tmp_path, "mixed.extxyz", make_atoms, 4, fidelity_info=("r2scan", "pbe"), seed0=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_data(_cfg(
            DatasetConfig(path=lo, fidelity="pbe"), DatasetConfig(path=hi, fidelity="r2scan"),
            DatasetConfig(path=test_file, role="test"),
        ))
    assert data.fidelities == ("pbe", "r2scan") and data.species == (1, 6, 8)
    assert data.fidelity_index == {"pbe": 0, "r2scan": 1}
    report = data.report
    assert report.totals_ok()
    assert report.frames_read == 30 and report.used == 29 and dict(report.excluded) == {"no energy, forces or stress label": 1}
    assert len(data.train) + len(data.valid) + len(data.test) == report.used
    lo_rep, hi_rep, test_rep = report.datasets
    assert test_rep.split == {"train": 0, "valid": 0, "test": 4}
    assert hi_rep.split == {"train": 4, "valid": 1, "test": 1}  # exact counts without structure_id
    assert sum(lo_rep.split.values()) == 19
    assert report.per_fidelity()["pbe"].frames == 19 + 2 and report.per_fidelity()["r2scan"].stress == 6 + 2
    text = report.format()
    assert "lo.extxyz" in text and "total" in text and "r2scan" in text
    # deterministic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        again = load_data(_cfg(DatasetConfig(path=lo, fidelity="pbe"), DatasetConfig(path=hi, fidelity="r2scan"),
                               DatasetConfig(path=test_file, role="test")))
    assert [s.index for s in again.train] == [s.index for s in data.train]


def test_given_fidelities_and_species_are_enforced(tmp_path, make_atoms):
    path = _write(tmp_path, "a.extxyz", make_atoms, 3)
    data = load_data(_cfg(DatasetConfig(path=path, fidelity="pbe")), species=(8, 6, 1), fidelities=("r2scan", "pbe"))
    assert data.fidelities == ("r2scan", "pbe") and data.species == (1, 6, 8)
    with pytest.raises(DataError, match="frame 0, field 'fidelity'"):
        load_data(_cfg(DatasetConfig(path=path, fidelity="hf")), fidelities=("pbe",))
    with pytest.raises(DataError, match="frame 0, field 'numbers'"):
        load_data(_cfg(DatasetConfig(path=path, fidelity="pbe")), species=(1,))


def test_same_structure_id_lands_in_the_same_split_and_pairs_match(tmp_path, make_atoms):
    lo = _write(tmp_path, "lo.extxyz", make_atoms, 30)
    frames = ase.io.read(lo, ":")
    hi_frames = [frames[k] for k in range(0, 30, 3)]  # HF labels on a subset of the LF geometries
    hi = str(tmp_path / "hi.extxyz")
    ase.io.write(hi, hi_frames)
    data = load_data(_cfg(DatasetConfig(path=lo, fidelity="pbe"), DatasetConfig(path=hi, fidelity="ccsd")))
    for split in ("train", "valid", "test"):
        ids = {s.fidelity: set() for s in data.split(split)}
        for s in data.split(split):
            ids[s.fidelity].add(s.structure_id)
        assert ids.get("ccsd", set()) <= ids.get("pbe", set())
    pairs = data.pairs("pbe", "ccsd", "train")
    assert pairs and all(l.structure_id == h.structure_id and l.fidelity == "pbe" for l, h in pairs)


def test_split_assignment_fractions_and_determinism():
    from mfjax.data.structures import Structure

    s = [Structure(species=np.array([1]), positions=np.zeros((1, 3)), cell=np.zeros((3, 3)), pbc=np.zeros(3, bool),
                   fidelity="a", index=k) for k in range(50)]
    a = split_assignment(s, 0.1, 0.2, seed=3)
    assert np.bincount(a, minlength=3).tolist() == [35, 5, 10]
    assert np.array_equal(a, split_assignment(s, 0.1, 0.2, seed=3))
    assert not np.array_equal(a, split_assignment(s, 0.1, 0.2, seed=4))


def test_duplicates_across_splits_warn(tmp_path, make_atoms):
    train = _write(tmp_path, "train.extxyz", make_atoms, 4, ids=False)
    test = _write(tmp_path, "test.extxyz", make_atoms, 2, ids=False)  # same seeds -> same geometries
    with pytest.warns(DataWarning, match=r"test.extxyz, frames 0, 1, field 'positions': 2 frame\(s\) of the test split duplicate train"):
        data = load_data(_cfg(DatasetConfig(path=train, fidelity="pbe", role="train"),
                              DatasetConfig(path=test, fidelity="pbe", role="test")))
    assert any("duplicate" in w for w in data.report.warnings)


def test_empty_dataset_is_an_error(tmp_path, make_atoms):
    path = _write(tmp_path, "unlabelled.extxyz", make_atoms, 2, unlabelled=(0, 1))
    with pytest.raises(DataError, match=r"unlabelled.extxyz: empty dataset: 2 frame\(s\) read, none usable"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            load_data(_cfg(DatasetConfig(path=path, fidelity="pbe")))
    with pytest.raises(DataError, match="empty dataset list"):
        load_data(_cfg())


def test_check_data_command(tmp_path, make_atoms, capsys):
    from mfjax.cli import main

    lo = _write(tmp_path, "lo.extxyz", make_atoms, 12)
    hi = _write(tmp_path, "hi.extxyz", make_atoms, 4, symbols="CH3OH", seed0=50)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"cutoff": 3.0, "datasets": [
        {"path": "lo.extxyz", "fidelity": "pbe"}, {"path": "hi.extxyz", "fidelity": "r2scan"}]}}))
    assert main(["check-data", str(config), "--set", "train.batch.max_graphs=4"]) == 0
    out = capsys.readouterr().out
    for expected in ("lo.extxyz", "total", "E0 (eV/atom", "r2scan", "force RMS", "mean neighbours", "n_node="):
        assert expected in out
    # a bad frame: one-line error, exit 2; --keep-going reports it and still exits 2
    bad = tmp_path / "bad.extxyz"
    bad.write_text(open(lo).read().replace("energy=", "energy=nan dummy=", 1))
    config.write_text(yaml.safe_dump({"data": {"datasets": [{"path": "bad.extxyz", "fidelity": "pbe"}]}}))
    assert main(["check-data", str(config)]) == 2
    assert "bad.extxyz, frame 0, field 'energy'" in capsys.readouterr().err
    assert main(["check-data", str(config), "--keep-going"]) == 2
    assert "invalid energy" in capsys.readouterr().out
    assert load_config(str(config)).data.datasets[0].path == str(bad)


def test_split_counts_per_fidelity_and_small_split_warning(tmp_path, make_atoms):
    """36/1/3-style splits are reported per fidelity and warned about, with the fix named."""
    lo = _write(tmp_path, "lo.extxyz", make_atoms, 40)
    with pytest.warns(DataWarning, match=r"fidelity 'pbe' has only \d+ valid frame\(s\).*role: valid.*data.split.valid"):
        data = load_data(_cfg(DatasetConfig(path=lo, fidelity="pbe"), valid=0.05, test=0.5))
    counts = data.report.split_counts["pbe"]
    assert counts == {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
    assert counts["valid"] < 10 and any("only" in w for w in data.report.warnings)
    header = next(line for line in data.report.format().splitlines() if line.startswith("fidelity"))
    assert header.split()[-3:] == ["train", "valid", "test"]  # the per-fidelity table has split columns


def test_fidelity_names_differing_only_by_case_are_an_error(tmp_path, make_atoms):
    mixed = _write(tmp_path, "mixed.extxyz", make_atoms, 4, fidelity_info=("low", "LOW"))
    with pytest.raises(FidelityError, match=r"'low' and 'LOW'.*differ only by case"):
        load_data(_cfg(DatasetConfig(path=mixed)))


def test_explicit_fidelity_order(tmp_path, make_atoms):
    lo = _write(tmp_path, "lo.extxyz", make_atoms, 12)
    hi = _write(tmp_path, "hi.extxyz", make_atoms, 12, seed0=50)
    cfg = DataConfig(cutoff=3.0, datasets=(DatasetConfig(path=lo, fidelity="pbe"), DatasetConfig(path=hi, fidelity="r2scan")),
                     fidelities=("r2scan", "pbe"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert load_data(cfg).fidelities == ("r2scan", "pbe")
