"""The jitted step: compiles once per run, sharded == single device (8 simulated CPU devices),
non-finite losses are not applied and stop the run after train.max_nonfinite_steps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from mfjax.config import load_config
from mfjax.training.batches import iterate_steps, steps_per_epoch
from mfjax.training.loop import NonFiniteLossError, train
from mfjax.training.setup import setup_run
from mfjax.training.sharding import put_replicated
from mfjax.training.toy import toy_builder, write_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("syn"))


def test_step_compiles_once_per_run(synthetic):
    cfg = load_config(data=synthetic, overrides=["train.epochs=2"])
    s = setup_run(cfg, model_builder=toy_builder)
    state = put_replicated(s.initial_state(), s.mesh)
    n = 0
    for epoch in range(2):  # batches of varied real sizes, two epochs of different orders
        for step in iterate_steps(s.batchers["train"], epoch, s.n_devices, s.mesh):
            state, logs = s.train_step(state, step.batch)
            n += 1
    assert n == sum(steps_per_epoch(s.batchers["train"], e, 1) for e in range(2)) > 3
    assert s.train_step._cache_size() == 1
    for split in ("valid", "test"):
        for step in iterate_steps(s.batchers[split], 0, s.n_devices, s.mesh):
            s.eval_step(state.variables(), step.batch)
    assert s.eval_step._cache_size() == 1


def test_nonfinite_step_is_skipped(synthetic):
    cfg = load_config(data=synthetic)
    s = setup_run(cfg, model_builder=toy_builder)
    state = put_replicated(s.initial_state(), s.mesh)
    step = next(iterate_steps(s.batchers["train"], 0, s.n_devices, None))
    bad = step.batch._replace(globals=step.batch.globals.replace(energy=np.full_like(step.batch.globals.energy, np.nan)))
    before = jax.device_get(state)
    after, logs = s.train_step(state, jax.device_put(bad, jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec("data"))))
    assert not bool(logs["finite"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(after), before)


def test_run_stops_after_max_nonfinite_steps(tmp_path):
    raw = write_synthetic_dataset(tmp_path)
    # a huge learning rate and no clipping: the toy potential blows up to inf/nan quickly
    cfg = load_config(data=raw, overrides=["train.max_nonfinite_steps=2", "train.lr=1.0e+30", "train.lr_final=1.0e+30",
                                           "train.epochs=50"])
    with pytest.raises(NonFiniteLossError, match="non-finite losses in a row") as info:
        train(cfg, model_builder=toy_builder, echo=False)
    assert "frame" in str(info.value)  # names the batch's structures
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step skipped; batch structures" in log
    rows = (tmp_path / "run" / "steps.csv").read_text().splitlines()
    assert rows[-1].endswith(",0") and rows[-2].endswith(",0")


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    assert jax.device_count() == 8, jax.device_count()
    from mfjax.config import load_config
    from mfjax.training.toy import toy_builder
    from mfjax.training.setup import setup_run
    from mfjax.training.sharding import put_replicated, put_batch, stack_graphs, make_mesh
    from mfjax.training.batches import cast_floats
    from mfjax.training.step import make_train_step, make_predict_fn
    from mfjax.training import loss as L
    from mfjax.training.toy import toy_predict
    raw = json.loads(sys.argv[1])
    cfg = load_config(data=raw)
    s = setup_run(cfg, model_builder=toy_builder)
    b = s.batchers["train"]
    graphs = [b.batch(p) for p in b.plan(0)[:8]]
    assert len(graphs) == 8
    stacked = cast_floats(stack_graphs(graphs))
    predict = lambda v, g: toy_predict(s.model.apply_fn, v, g)
    fw = L.fidelity_weight_vector(s.data.fidelities, cfg.train.loss.fidelity_weights)
    settings = L.settings_from_config(cfg.train.loss)
    out = {}
    for name, devices in (("single", jax.devices()[:1]), ("sharded", jax.devices())):
        mesh = make_mesh(devices)
        step = make_train_step(predict, s.optimizer, settings, fw, ema_decay=0.99, schedule=s.schedule, mesh=mesh)
        state = put_replicated(s.initial_state(), mesh)
        batch = put_batch(stacked, mesh)
        for _ in range(2):
            state, logs = step(state, batch)
        assert len(batch.n_node.sharding.device_set) == len(devices)
        out[name] = (float(logs["loss"]), float(logs["grad_norm"]), jax.device_get(state.params))
    (l1, g1, p1), (l8, g8, p8) = out["single"], out["sharded"]
    assert abs(l1 - l8) <= 1e-6 * abs(l1), (l1, l8)
    assert abs(g1 - g8) <= 1e-5 * abs(g1), (g1, g8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p1, p8)
    print("OK", l1, l8)
    """
)


def test_sharded_step_equals_single_device(tmp_path):
    import json

    raw = write_synthetic_dataset(tmp_path, n_low=60, n_high=20)
    raw["train"]["batch"]["max_graphs"] = 2
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, json.dumps(raw)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
