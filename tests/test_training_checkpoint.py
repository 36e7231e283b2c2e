"""Checkpoints of the real ``Potential`` (tiny config): round trip, exact resume (stop + resume, and
SIGKILL mid-epoch + resume, SIGINT)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from helpers.synthetic import TINY_MODEL, synthetic_atoms, to_structures, write_synthetic_dataset

from mfjax.config import load_config
from mfjax.model import ModelSpec
from mfjax.nn.presets import load_preset
from mfjax.training import optim
from mfjax.training import state as state_lib
from mfjax.training.checkpoint import Checkpoints
from mfjax.training.loop import train
from mfjax.training.setup import example_graph
from mfjax.training.sharding import make_mesh, put_replicated


def _rows(path, drop=("time_s",)):
    with open(path, newline="") as handle:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(handle)]


@pytest.mark.parametrize("ema", [True, False])
def test_checkpoint_round_trip(tmp_path, ema):
    cfg = load_config(data={"data": {"datasets": [{"path": "x"}]}, "train": {"grad_clip": 1.0}})
    opt, _ = optim.make_optimizer(cfg.train, 100)
    overrides = {k: v for k, v in TINY_MODEL.items() if k != "preset"}
    spec = ModelSpec(load_preset("small", cutoff=4.0, **overrides), (18, 29), ("a", "b"), 4.0)
    example = example_graph(to_structures(synthetic_atoms(1, "a"))[0], spec)
    mesh = make_mesh()
    s = state_lib.create_state(spec.init(0, example), opt, 0, ema)
    s = put_replicated(s.replace(step=s.step + 7, rng=jax.random.split(s.rng)[0]), mesh)
    ckpt = Checkpoints(tmp_path)
    assert not ckpt.exists("last")
    ckpt.save("last", s, {"epoch": 2, "step_in_epoch": 3})
    ckpt.save("last", s, {"epoch": 2, "step_in_epoch": 4})  # same training step twice is fine
    target = put_replicated(state_lib.create_state(spec.init(1, example), opt, 0, ema), mesh)
    restored, meta = ckpt.restore("last", target)
    assert meta == {"epoch": 2, "step_in_epoch": 4}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(s))
    assert sorted(os.listdir(tmp_path / "checkpoints" / "last")) == ["1"]  # only the newest is kept
    assert ckpt.restore("best", target) is None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (tiny real model, periodic checkpoints every 2 steps) to compare against."""
    root = tmp_path_factory.mktemp("ref")
    raw = write_synthetic_dataset(root / "data")
    raw["train"]["checkpoint_every_steps"] = 2
    raw["output"]["plots"] = False
    full = load_config(data=raw, overrides=[f"output.dir={root / 'full'}"])
    result = train(full, echo=False)
    return raw, result, root / "full"


def test_stop_and_resume_is_exact(tmp_path, reference):
    raw, ref, ref_dir = reference
    part = load_config(data=raw, overrides=[f"output.dir={tmp_path / 'part'}"])
    n_total = ref.global_step
    stopped = train(part, echo=False, stop_after_steps=n_total // 2 + 1)
    assert stopped.interrupted and stopped.global_step == n_total // 2 + 1
    resumed = train(part, resume=True, echo=False)
    assert not resumed.interrupted and resumed.global_step == n_total
    assert _rows(ref_dir / "steps.csv") == _rows(tmp_path / "part" / "steps.csv")
    assert _rows(ref_dir / "metrics.csv") == _rows(tmp_path / "part" / "metrics.csv")
    assert resumed.test_metrics == ref.test_metrics


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import mfjax.training.fit as fit
    from mfjax.config import load_config
    from mfjax.training.loop import train
    slow = fit.iterate_steps
    def iterate_steps(*args, **kwargs):  # slow the run down so the parent can kill it mid-epoch
        for step in slow(*args, **kwargs):
            time.sleep(0.15)
            yield step
    fit.iterate_steps = iterate_steps
    cfg = load_config(data=json.loads(sys.argv[1]))
    train(cfg, resume=len(sys.argv) > 2, echo=False)
    """
)


def test_sigkill_mid_epoch_then_resume_reproduces_the_run(tmp_path, reference):
    raw, ref, ref_dir = reference
    raw = json.loads(json.dumps(raw))
    ref_rows = _rows(ref_dir / "steps.csv")
    epoch0 = sum(1 for r in ref_rows if r["epoch"] == "0")
    kill_at = epoch0 + 3  # mid second epoch, one step after a periodic checkpoint or so
    raw["output"]["dir"] = str(tmp_path / "killed")
    steps_csv = tmp_path / "killed" / "steps.csv"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(raw)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if steps_csv.exists() and len(steps_csv.read_text().splitlines()) - 1 >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_rows = _rows(steps_csv)
    assert epoch0 < len(killed_rows) < len(ref_rows)
    resumed = train(load_config(data=raw), resume=True, echo=False)
    assert resumed.global_step == ref.global_step
    rows = _rows(steps_csv)
    assert rows == ref_rows  # the loss curve after the resume point is the uninterrupted one
    assert resumed.test_metrics == ref.test_metrics
    assert not any(p.name.endswith(".orbax-checkpoint-tmp") for p in (tmp_path / "killed" / "checkpoints").rglob("*"))


def test_sigint_finishes_the_step_saves_and_resumes_exactly(tmp_path, reference):
    raw, ref, ref_dir = reference
    raw = json.loads(json.dumps(raw))
    raw["train"]["checkpoint_every_steps"] = 0  # only the SIGINT save can hold the mid-epoch position
    raw["output"]["dir"] = str(tmp_path / "int")
    steps_csv = tmp_path / "int" / "steps.csv"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(raw)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if steps_csv.exists() and len(steps_csv.read_text().splitlines()) - 1 >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    log = (tmp_path / "int" / "train.log").read_text()
    assert "interrupted: saved the last checkpoint" in log
    n_done = len(_rows(steps_csv))
    assert 3 <= n_done < ref.global_step
    resumed = train(load_config(data=raw), resume=True, echo=False)
    assert f"global step {n_done})" in (tmp_path / "int" / "train.log").read_text()  # nothing lost, nothing redone
    assert _rows(steps_csv) == _rows(ref_dir / "steps.csv")
    assert resumed.test_metrics == ref.test_metrics
