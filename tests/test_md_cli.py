"""``mfjax md``: trajectory + log written, progress and stability reported (both engines), failure
detected on a blown-up run, fidelity errors exit 2, and an exported real model runs end to end."""

from __future__ import annotations

import ase.build
import ase.io
import numpy as np
import pytest

from helpers.models import random_potential_model

from mfjax.cli import main


@pytest.fixture
def si_file(tmp_path):
    path = tmp_path / "si.extxyz"
    ase.io.write(path, ase.build.bulk("Si", "diamond", a=5.43, cubic=True))
    return path


@pytest.mark.parametrize("engine,traj", [("jaxmd", "out.extxyz"), ("ase", "out.traj")])
def test_md_writes_trajectory_and_log(tmp_path, si_file, capsys, engine, traj):
    out, log = tmp_path / traj, tmp_path / "out.log"
    code = main(["md", "toy-lj", str(si_file), "--fidelity", "high", "--ensemble", "nvt", "--steps", "40",
                 "--interval", "10", "--engine", engine, "--traj", str(out), "--log", str(log),
                 "--msd-species", "Si"])
    assert code == 0
    text = capsys.readouterr().out
    assert "ns/day" in text and "stability: stable for the full 40.0 fs" in text and "diffusion Si" in text
    assert "ns/day after compilation" in text and "(compile " in text
    frames = ase.io.read(out, ":")
    assert len(frames) == 5 and all(np.isfinite(f.get_potential_energy()) for f in frames)
    table = np.loadtxt(log)
    assert table.shape == (5, 5)
    np.testing.assert_allclose(table[:, 0], [0, 10, 20, 30, 40])
    assert np.all(table[:, 1] > 0) and np.all(np.isfinite(table[:, 4]))


def test_md_reports_failure_time(tmp_path, si_file, capsys):
    code = main(["md", "toy-lj", str(si_file), "--fidelity", "low", "--ensemble", "nve", "--temperature", "3000",
                 "--timestep", "25", "--steps", "200", "--interval", "5", "--quiet", "--msd-species", "Si"])
    assert code == 0
    text = capsys.readouterr().out
    assert "stability: FAILED after" in text
    assert "diffusion Si: not fitted (the run failed)" in text and "D = " not in text


def test_md_unknown_fidelity_exits_2(si_file, capsys):
    assert main(["md", "toy-lj", str(si_file), "--fidelity", "ccsd", "--steps", "1"]) == 2
    assert "low, high" in capsys.readouterr().err


def test_md_exported_model_molecule(tmp_path, capsys):
    model = random_potential_model(num_layers=1, hidden_irreps="8x0e+4x1e", lmax=1)
    path = model.export(tmp_path / "model")
    mol = tmp_path / "mol.xyz"
    ase.io.write(mol, ase.build.molecule("CH3OH"))
    code = main(["md", str(path), str(mol), "--fidelity", "r2scan", "--ensemble", "nvt_nose_hoover",
                 "--steps", "20", "--interval", "10", "--traj", str(tmp_path / "t.extxyz")])
    assert code == 0
    assert "stability" in capsys.readouterr().out
    assert len(ase.io.read(tmp_path / "t.extxyz", ":")) == 3
    assert main(["md", str(path), str(mol), "--steps", "1"]) == 2  # two fidelities, none named
