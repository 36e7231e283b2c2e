"""The jitted step of the real ``Potential`` (tiny config): compiles once per run, sharded == single
device (8 simulated CPU devices), non-finite losses are not applied and stop the run after
train.max_nonfinite_steps (``NonFiniteLossError``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.synthetic import write_synthetic_dataset

from mfjax.config import load_config
from mfjax.data.batching import GraphBatcher
from mfjax.data.dataset import load_data
from mfjax.training.batches import iterate_steps, steps_per_epoch
from mfjax.training.compiled import StepCache
from mfjax.training.fit import NonFiniteLossError
from mfjax.training.loop import train
from mfjax.training.optim import make_optimizer
from mfjax.training.setup import batch_budget, initial_model
from mfjax.training.sharding import make_mesh, put_replicated
from mfjax.training.state import create_state

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(cfg, data, model, train batcher, mesh) of the synthetic two-fidelity set, real tiny model."""
    raw = write_synthetic_dataset(tmp_path_factory.mktemp("syn"))
    cfg = load_config(data=raw, overrides=["train.epochs=2"])
    data = load_data(cfg.data)
    model, _ = initial_model(cfg, data)
    budget = batch_budget(cfg, data.train + data.valid + data.test)
    batchers = {split: GraphBatcher(getattr(data, split), cfg.data.cutoff, model.spec.fidelity_map, budget,
                                    shuffle=split == "train", seed=0) for split in ("train", "valid", "test")}
    return cfg, data, model, batchers, make_mesh()


def _state(cfg, model, mesh, steps=100):
    optimizer, _ = make_optimizer(cfg.train, steps)
    return put_replicated(create_state(model.variables, optimizer, 0, cfg.train.ema is not None), mesh)


def test_step_compiles_once_per_run(run):
    cfg, data, model, batchers, mesh = run
    cache = StepCache()
    step_fn = cache.train_step(model, cfg.train, fidelity_weights=cfg.train.loss.fidelity_weights, trainable=None,
                               compute_stress=True, mesh=mesh)
    state = _state(cfg, model, mesh)
    n = 0
    for epoch in range(2):  # batches of varied real sizes, two epochs of different orders
        for step in iterate_steps(batchers["train"], epoch, 1, mesh):
            state, logs = step_fn(state, step.batch)
            assert bool(logs["finite"])
            n += 1
    assert n == sum(steps_per_epoch(batchers["train"], e, 1) for e in range(2)) > 3
    assert step_fn.jitted._cache_size() == 1
    eval_fn = cache.eval_step(model, compute_stress=True, mesh=mesh)
    for split in ("valid", "test"):
        for step in iterate_steps(batchers[split], 0, 1, mesh):
            eval_fn(state.variables(), step.batch)
    assert eval_fn.jitted._cache_size() == 1
    assert cache.compilations == 2


def test_nonfinite_step_is_skipped(run):
    cfg, data, model, batchers, mesh = run
    step_fn = StepCache().train_step(model, cfg.train, fidelity_weights={}, trainable=None, compute_stress=True,
                                     mesh=mesh)
    state = _state(cfg, model, mesh)
    step = next(iterate_steps(batchers["train"], 0, 1, None))
    bad = step.batch._replace(globals=step.batch.globals.replace(energy=np.full_like(step.batch.globals.energy, np.nan)))
    before = jax.device_get(state)
    after, logs = step_fn(state, jax.device_put(bad, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))))
    assert not bool(logs["finite"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(after), before)


def test_run_stops_after_max_nonfinite_steps(tmp_path):
    raw = write_synthetic_dataset(tmp_path)
    # a huge learning rate and no clipping: the weights blow up to inf/nan after the first step
    cfg = load_config(data=raw, overrides=["train.max_nonfinite_steps=2", "train.lr=1.0e+30", "train.lr_final=1.0e+30",
                                           "train.epochs=50", "train.ema=null"])
    with pytest.raises(NonFiniteLossError, match="non-finite losses in a row") as info:
        train(cfg, echo=False)
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
    from mfjax.data.batching import GraphBatcher
    from mfjax.data.dataset import load_data
    from mfjax.data.graph import cast_floats
    from mfjax.training.compiled import StepCache
    from mfjax.training.optim import make_optimizer
    from mfjax.training.setup import batch_budget, initial_model
    from mfjax.training.sharding import put_replicated, put_batch, stack_graphs, make_mesh
    from mfjax.training.state import create_state
    cfg = load_config(data=json.loads(sys.argv[1]))
    data = load_data(cfg.data)
    model, _ = initial_model(cfg, data)
    b = GraphBatcher(data.train, cfg.data.cutoff, model.spec.fidelity_map, batch_budget(cfg, data.train), seed=0)
    graphs = [b.batch(p) for p in b.plan(0)[:8]]
    assert len(graphs) == 8
    stacked = cast_floats(stack_graphs(graphs))
    optimizer, _ = make_optimizer(cfg.train, 100)
    out = {}
    for name, devices in (("single", jax.devices()[:1]), ("sharded", jax.devices())):
        mesh = make_mesh(devices)
        step = StepCache().train_step(model, cfg.train, fidelity_weights=cfg.train.loss.fidelity_weights,
                                      trainable=None, compute_stress=True, mesh=mesh)
        state = put_replicated(create_state(model.variables, optimizer, 0, True), mesh)
        batch = put_batch(stacked, mesh)
        for _ in range(2):
            state, logs = step(state, batch)
        assert len(batch.n_node.sharding.device_set) == len(devices)
        assert bool(logs["finite"])
        out[name] = (float(logs["loss"]), float(logs["grad_norm"]), jax.device_get(state.params),
                     jax.device_get(state.ema))
    (l1, g1, p1, e1), (l8, g8, p8, e8) = out["single"], out["sharded"]
    assert abs(l1 - l8) <= 1e-6 * abs(l1), (l1, l8)
    assert abs(g1 - g8) <= 1e-5 * abs(g1), (g1, g8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p1, p8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), e1, e8)
    # evaluation and per-structure predictions sharded over 8 devices (blank batches included)
    from mfjax.training.evaluation import evaluate, predict_structures
    some = data.valid + data.test
    one = predict_structures(model, some, max_graphs=2)
    eight = predict_structures(model, some, max_graphs=2, mesh=make_mesh())
    for a, b in zip(one, eight):
        assert abs(a["energy"] - b["energy"]) <= 1e-6 * abs(a["energy"]), (a["energy"], b["energy"])
        np.testing.assert_allclose(a["forces"], b["forces"], rtol=1e-5, atol=1e-6)
    m1, m8 = evaluate(model, some, max_graphs=2), evaluate(model, some, max_graphs=2, mesh=make_mesh())
    for f in m1:
        for k, v in m1[f].items():
            assert v == m8[f][k] if v is None or isinstance(v, int) else abs(v - m8[f][k]) <= 1e-5 * abs(v), (f, k)
    print("OK", l1, l8)
    """
)


def test_sharded_step_equals_single_device(tmp_path):
    raw = write_synthetic_dataset(tmp_path, n_low=60, n_high=20)
    raw["train"]["batch"]["max_graphs"] = 2
    raw["train"]["ema"] = 0.99
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, json.dumps(raw)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
