"""Two ``mfjax train`` processes with ``jax.distributed`` on CPU (localhost coordinator, one device
each) train exactly like one process on two simulated devices: the same per-step losses, the same
test metrics; only process 0 writes the run directory, and the Orbax checkpoints (saved by both
processes) restore on a two-process ``--resume``."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.synthetic import write_synthetic_dataset

TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                                                                     "JAX_PROCESS_ID"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


def _train(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mfjax.cli", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _two_processes(args: list[str]) -> list[str]:
    port = _free_port()
    procs = [_train(args, _env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                               JAX_PROCESS_ID=str(i))) for i in range(2)]
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    return outs


def _losses(run: Path) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    with open(run / "steps.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = ("loss", "loss_lo", "loss_hi", "grad_norm", "lr")
    return [(r["step"], r["epoch"], r["batch"]) for r in rows], np.array([[float(r[k]) for k in keys] for r in rows])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(config, one-process run on two simulated devices, two-process run, process outputs)."""
    root = tmp_path_factory.mktemp("mp")
    raw = write_synthetic_dataset(root / "data", n_low=16, n_high=8)
    raw["train"].update(epochs=2, checkpoint_every_steps=2)
    raw["output"].update(plots=False, progress=False)
    config = root / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    ref, multi = root / "one", root / "two"
    one = _train([str(config), "--output", str(ref), "--set", "train.distributed=false"], _env(2))
    outs = _two_processes([str(config), "--output", str(multi), "--set", "train.distributed=true"])
    out_one = one.communicate(timeout=TIMEOUT)[0]
    assert one.returncode == 0, out_one[-4000:]
    return config, ref, multi, [out_one, *outs]


def test_two_processes_equal_one_process_on_two_devices(runs):
    _, ref, multi, (out_one, out0, out1) = runs
    assert "2 device(s)" in out_one and "2 device(s)" in out0
    assert "Data accounting" not in out1 and "epoch 1/2" not in out1  # process 1 prints (and writes) nothing
    steps_one, losses_one = _losses(ref)
    steps_two, losses_two = _losses(multi)
    assert steps_one == steps_two and len(steps_one) >= 4
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5, atol=1e-7)
    test_one = json.loads((ref / "test_metrics.json").read_text())
    test_two = json.loads((multi / "test_metrics.json").read_text())
    for fid in test_one:
        for key, value in test_one[fid].items():
            if value is None:
                assert test_two[fid][key] is None, (fid, key)
            else:
                np.testing.assert_allclose(test_two[fid][key], value, rtol=1e-4, err_msg=f"{fid} {key}")
    log = (multi / "train.log").read_text()
    assert log.count("Data accounting") == 1 and log.count("epoch 2/2") == 1  # one writer
    assert (multi / "model" / "model.json").is_file() and (multi / "config.yaml").is_file()
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["best", "last"]


@pytest.mark.slow
def test_two_processes_resume_from_their_shared_checkpoint(runs):
    """Both processes restore the shared Orbax checkpoint and continue for one more epoch."""
    config, _, multi, _ = runs
    steps_two, losses_two = _losses(multi)
    outs = _two_processes([str(config), "--output", str(multi), "--set", "train.distributed=true", "--resume",
                           "--set", "train.epochs=3"])
    assert "resumed at epoch 3, step 0 of the epoch" in outs[0]
    steps_three, losses_three = _losses(multi)
    assert steps_three[: len(steps_two)] == steps_two and len(steps_three) > len(steps_two)
    np.testing.assert_array_equal(losses_three[: len(steps_two)], losses_two)
    assert len((multi / "resume_log.jsonl").read_text().splitlines()) == 1
