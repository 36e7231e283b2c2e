"""Crash-safe MD: a run killed with SIGKILL (or crashing) and resumed from its checkpoint writes the
same trajectory and log as an uninterrupted run (frames after the checkpoint and a partly written last
frame are dropped), for both engines and the thermostats with hidden state (Langevin RNG, Nosé-Hoover
chain, barostat); a changed config and an existing trajectory are refused with one line (exit 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import ase.build
import ase.io
import numpy as np
import pytest

from mfjax.cli import main
from mfjax.errors import ConfigError
from mfjax.md.checkpoint import checkpoint_path, load_checkpoint
from mfjax.md.config import MDConfig
from mfjax.md.lennard_jones import lennard_jones_model
from mfjax.md.simulate import run_md

MODEL = lennard_jones_model({"low": 0.010, "high": 0.012}, sigma=2.2, cutoff=5.0, species=(14,))


def data_lines(path) -> int:
    return sum(1 for line in open(path) if line.strip() and not line.startswith("#"))


def assert_same_run(ref_traj, ref_log, traj, log, atol=0.0):
    a, b = ase.io.read(ref_traj, ":"), ase.io.read(traj, ":")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(y.positions, x.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(y.get_velocities(), x.get_velocities(), rtol=0, atol=atol)
    table, ref = np.loadtxt(log), np.loadtxt(ref_log)
    np.testing.assert_array_equal(table[:, 0], ref[:, 0])  # the same steps, none lost or duplicated
    np.testing.assert_allclose(table, ref, rtol=0, atol=max(atol, 1e-6))


class Crash(Exception):
    pass


@pytest.mark.parametrize("engine,ensemble,suffix", [("jaxmd", "nvt", ".extxyz"), ("ase", "nvt", ".extxyz"),
                                                    ("ase", "npt", ".traj")])
def test_crash_then_resume_equals_uninterrupted(tmp_path, si, engine, ensemble, suffix):
    base = MDConfig(fidelity="high", ensemble=ensemble, engine=engine, steps=20, interval=5, checkpoint_every=2,
                    temperature=600.0)
    ref = run_md(MODEL, si, replace(base, traj=str(tmp_path / f"ref{suffix}"), log=str(tmp_path / "ref.log"),
                                    quiet=True))
    cfg = replace(base, traj=str(tmp_path / f"run{suffix}"), log=str(tmp_path / "run.log"))

    def crash_at_15(line):  # after frame 15 was written, before its checkpoint would be (every 2 frames)
        if line.split()[:2] == ["step", "15"]:
            raise Crash

    with pytest.raises(Crash):
        run_md(MODEL, si, cfg, progress=crash_at_15)
    assert load_checkpoint(checkpoint_path(cfg.traj)).step == 10
    assert len(ase.io.read(cfg.traj, ":")) == data_lines(cfg.log) == 4  # frame 15 is beyond the checkpoint
    lines: list[str] = []
    result = run_md(MODEL, si, replace(cfg, resume=True), progress=lines.append)
    assert lines[0].startswith("resuming") and result.start_step == 10 and result.steps_done == 20
    assert len(result.frames) == len(ref.frames) == 5 and result.stable
    # float rounding is all that could differ; on CPU the runs are identical to the digits written
    assert_same_run(tmp_path / f"ref{suffix}", tmp_path / "ref.log", cfg.traj, cfg.log, atol=1e-6)


def test_sigkill_mid_run_then_resume(tmp_path, si_file, capsys):
    """jax-md NVE killed with SIGKILL at a random moment, a half-written frame and log line appended:
    ``--resume`` gives the uninterrupted trajectory and log."""
    args = ["md", "toy-lj", str(si_file), "--fidelity", "high", "--ensemble", "nve", "--steps", "300",
            "--interval", "2", "--checkpoint-every", "4", "--quiet"]
    traj, log = tmp_path / "run.extxyz", tmp_path / "run.log"
    outputs = ["--traj", str(traj), "--log", str(log)]
    proc = subprocess.Popen([sys.executable, "-m", "mfjax.cli", *args, *outputs], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "MFJAX_NO_COMPILATION_CACHE": "1"})
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if checkpoint_path(traj).exists() and data_lines(log) >= 12:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    ckpt = load_checkpoint(checkpoint_path(traj))
    assert 0 <= ckpt.step < 300 and ckpt.frames == ckpt.step // 2 + 1
    with open(traj, "a") as handle:  # a partly written trailing frame
        handle.write('8\nLattice="5.43 0.0 0.0 0.0 5.43 0.0 0.0 0.0 5.43" Properties=species:S:1:pos:R:3\nSi 0.0 0')
    with open(log, "a") as handle:
        handle.write("1234.000 56")
    assert main([*args, *outputs, "--resume"]) == 0
    assert f"resumed at step {ckpt.step} of 300" in capsys.readouterr().out
    ref, ref_log = tmp_path / "ref.extxyz", tmp_path / "ref.log"
    assert main([*args, "--traj", str(ref), "--log", str(ref_log)]) == 0
    assert len(ase.io.read(ref, ":")) == 151
    assert_same_run(ref, ref_log, traj, log, atol=1e-6)


def test_changed_config_and_existing_trajectory_are_refused(tmp_path, si_file, capsys):
    traj, log = tmp_path / "out.traj", tmp_path / "out.log"  # also the ASE .traj format
    args = ["md", "toy-lj", str(si_file), "--fidelity", "high", "--steps", "4", "--interval", "2", "--quiet",
            "--engine", "ase", "--traj", str(traj), "--log", str(log)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2  # exists, neither --resume nor --overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "--resume" in err and "--overwrite" in err
    assert main([*args, "--timestep", "2.0", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timestep (1.0 -> 2.0)" in err and "ensemble" not in err
    assert main([*args, "--fidelity", "low", "--temperature", "500", "--resume"]) == 2
    assert "fidelity ('high' -> 'low'), temperature (300.0 -> 500.0)" in capsys.readouterr().err
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert main([*args, "--resume"]) == 0  # already finished: nothing to integrate
    assert len(ase.io.read(traj, ":")) == 3
    assert main([*args, "--steps", "2", "--resume"]) == 2  # fewer steps than done
    assert main([*args, "--steps", "8", "--resume"]) == 0  # a finished run resumed with more steps continues
    assert len(ase.io.read(traj, ":")) == 5
    np.testing.assert_array_equal(np.loadtxt(log)[:, 0], [0, 2, 4, 6, 8])
    assert main([*args, "--steps", "2", "--overwrite"]) == 0
    assert len(ase.io.read(traj, ":")) == 2 and load_checkpoint(checkpoint_path(traj)).step == 2
    with pytest.raises(ConfigError, match=r"md\.resume needs md\.traj"):
        MDConfig(resume=True).validate()
