"""Ablation stages run through ``training.fit``: ``train.*`` keys honoured (adamw, warm-up, cosine),
a stage killed mid-way resumes to the uninterrupted result, one compilation per kind of model
across runs, ``NonFiniteLossError``, and ``train``/``ablation`` keys that would shadow each other
rejected."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest
from helpers.synthetic import synthetic_config

import mfjax.training.fit as fit_module
from mfjax.errors import ConfigError
from mfjax.strategies import hf_only
from mfjax.strategies.base import Context
from mfjax.strategies.data import prepare_data
from mfjax.strategies.settings import load_ablation_config
from mfjax.training.fit import Callback, NonFiniteLossError
from mfjax.training.optim import make_schedule


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stages")
    raw = synthetic_config(directory)
    cfg, settings = load_ablation_config(None, data=raw)
    return raw, cfg, settings, prepare_data(cfg, settings)


def _ctx(setup, out, train=None, **kwargs) -> Context:
    raw, cfg, settings, data = setup
    if train:
        cfg, _ = load_ablation_config(None, data={**raw, "train": {**raw["train"], **train}})
    return Context(cfg, settings, data, out, log=lambda _: None, **kwargs)


class Record(Callback):
    def __init__(self, kill_at: int | None = None):
        self.lrs, self.kill_at = [], kill_at

    def on_step(self, global_step, epoch, index, logs):
        self.lrs.append(float(logs["lr"]))
        if global_step == self.kill_at:
            raise RuntimeError("killed")


def test_stage_honours_adamw_warmup_and_cosine(setup, tmp_path, monkeypatch):
    ctx = _ctx(setup, tmp_path, train={"optimizer": "adamw", "weight_decay": 0.01, "warmup_steps": 3,
                                       "schedule": "cosine", "lr": 0.02, "lr_final": 0.001})
    record = Record()
    ctx.callbacks.append(record)
    states = []
    original = fit_module.create_state
    monkeypatch.setattr(fit_module, "create_state", lambda *a, **k: states.append(original(*a, **k)) or states[-1])
    hf = ctx.data.hf_subset(1.0, 0)
    hf_only.run(ctx, hf, 0)
    steps = ctx.settings.steps.hf
    expected = [float(make_schedule(0.02, 0.001, steps, "cosine", 3)(t)) for t in range(steps)]
    np.testing.assert_allclose(record.lrs, expected, rtol=1e-6)
    assert record.lrs[0] == 0.0 and max(record.lrs) == pytest.approx(0.02)  # warm-up from 0, then cosine
    chain = states[0].opt_state
    assert [type(s).__name__ for s in chain] == ["ScaleByAdamState", "EmptyState", "ScheduleState"]  # adamw


def test_killed_stage_resumes_to_the_uninterrupted_result(setup, tmp_path):
    train = {"checkpoint_every_steps": 3}
    hf = setup[3].hf_subset(1.0, 0)
    reference = hf_only.run(_ctx(setup, tmp_path / "ref", train=train), hf, 0)
    killed = _ctx(setup, tmp_path / "killed", train=train)
    killed.callbacks.append(Record(kill_at=5))  # dies after step 5; the last checkpoint is step 3's
    with pytest.raises(RuntimeError, match="killed"):
        hf_only.run(killed, hf, 0)
    resumed = _ctx(setup, tmp_path / "killed", train=train, resume=True)
    record = Record()
    resumed.callbacks.append(record)
    outcome = hf_only.run(resumed, hf, 0)
    assert len(record.lrs) == resumed.settings.steps.hf - 3  # steps 4..10 only
    (a,), (b,) = reference.stages, outcome.stages
    assert (a.steps, a.best_step, a.best_value, a.history) == (b.steps, b.best_step, b.best_value, b.history)
    jax.tree.map(np.testing.assert_array_equal, reference.model.variables, outcome.model.variables)
    # a finished stage is restored, not retrained
    again = _ctx(setup, tmp_path / "killed", train=train, resume=True)
    again.callbacks.append(rec := Record())
    hf_only.run(again, hf, 0)
    assert rec.lrs == []


def test_one_compilation_per_kind_of_model_across_runs(setup, tmp_path):
    ctx = _ctx(setup, tmp_path)
    hf_only.run(ctx, ctx.data.hf_subset(0.5, 0), 0)
    first = ctx.cache.compilations
    shorter = Context(ctx.cfg, replace(ctx.settings, steps=replace(ctx.settings.steps, hf=7)), ctx.data, tmp_path,
                      log=lambda _: None, cache=ctx.cache)
    hf_only.run(shorter, ctx.data.hf_subset(1.0, 1), 1)  # other data, seed and step budget: same kind
    assert ctx.cache.compilations == first == 2  # one train step, one evaluation step
    assert ctx.cache.cache_sizes() == [1, 1]


def test_nonfinite_losses_stop_a_stage(setup, tmp_path):
    ctx = _ctx(setup, tmp_path, train={"lr": 1e30, "lr_final": 1e30, "max_nonfinite_steps": 2})
    with pytest.raises(NonFiniteLossError, match="non-finite losses in a row"):
        hf_only.run(ctx, ctx.data.hf_subset(1.0, 0), 0)


@pytest.mark.parametrize("train,ablation,message", [
    ({"epochs": 5}, {}, "train.epochs is not used by mfjax ablate"),
    ({"eval_every": 2}, {}, "train.eval_every_steps"),
    ({"best_fidelity": "high"}, {}, "train.best_fidelity is not used"),
    ({}, {"e0_alpha": 0.1}, "ablation.e0_alpha was removed: use train.e0_alpha"),
    ({}, {"eval_every": 10}, "use train.eval_every_steps"),
    ({"weight_decay": 0.1}, {}, "needs optimizer: adamw"),
])
def test_shadowing_or_unused_keys_are_config_errors(setup, train, ablation, message):
    raw = setup[0]
    data = {**raw, "train": {**raw["train"], **train}, "ablation": {**raw["ablation"], **ablation}}
    with pytest.raises(ConfigError, match=message):
        load_ablation_config(None, data=data)
