"""Ablation stages run through ``training.fit``: ``train.*`` keys honoured (adamw, warm-up, cosine),
a stage killed mid-way resumes to the uninterrupted result, one compilation per kind of model
across runs, ``NonFiniteLossError``, ``train``/``ablation`` keys that would shadow each other
rejected, early stopping (patience) and the equal-budget columns of a results row."""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest
from helpers.synthetic import synthetic_config

import mfjax.training.fit as fit_module
from mfjax.errors import ConfigError
import mfjax.strategies.base as base_module
from mfjax.strategies import hf_only
from mfjax.strategies.ablate import run_strategy
from mfjax.strategies.base import Context
from mfjax.strategies.data import prepare_data
from mfjax.strategies.settings import load_ablation_config
from mfjax.training.checkpoint import Checkpoints
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
    steps = ctx.settings.budget.total_steps  # hf_only trains the whole budget from scratch
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
    assert len(record.lrs) == resumed.settings.budget.total_steps - 3  # steps 4..20 only
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
    shorter = Context(ctx.cfg, replace(ctx.settings, budget=replace(ctx.settings.budget, total_steps=13)), ctx.data, tmp_path,
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
    ({"patience": 2, "keep": "last"}, {}, "set patience: null or keep: best"),
])
def test_shadowing_or_unused_keys_are_config_errors(setup, train, ablation, message):
    raw = setup[0]
    data = {**raw, "train": {**raw["train"], **train}, "ablation": {**raw["ablation"], **ablation}}
    with pytest.raises(ConfigError, match=message):
        load_ablation_config(None, data=data)


def test_patience_stops_early_keeps_the_best_and_resume_does_not_train_on(setup, tmp_path):
    """lr 1e-30: the validation metric never improves after the first validation, so patience 2
    stops at the third validation (eval every 5 steps -> step 15 of 40); a resume trains nothing."""
    _, cfg, settings, data = setup
    ctx = Context(cfg, settings, data, tmp_path)
    model = ctx.fresh(ctx.spec((data.high,)), data.hf_pool, 0)
    tiny = replace(cfg.train, lr=1e-30, lr_final=1e-30)
    hf = data.hf_subset(1.0, 0)
    kwargs = dict(budget=data.budget, steps=40, select=data.high, eval_every_steps=5, patience=2,
                  checkpoint_dir=tmp_path / "stage", log=lambda _: None)
    result = fit_module.fit(model, hf, data.hf_valid, tiny, **kwargs)
    assert (result.stopped_early, result.steps, result.best_step) == (True, 15, 5)
    assert [h["step"] for h in result.history] == [5, 10, 15]
    # every step's batch is counted: whole epochs of len(hf) structures, then part of one
    per_epoch = -(-len(hf) // 8)  # max_graphs 8 (the synthetic batches are graph-limited)
    assert result.structures_seen[data.high] == len(hf) * (15 // per_epoch) + min(8 * (15 % per_epoch), len(hf))
    record = Record()
    again = fit_module.fit(model, hf, data.hf_valid, tiny, resume=True, callbacks=[record], **kwargs)
    assert record.lrs == [] and again.stopped_early and again.steps == 15 and again.best_step == 5
    off = fit_module.fit(model, hf, data.hf_valid, tiny, **{**kwargs, "patience": 0, "checkpoint_dir": None})
    assert not off.stopped_early and off.steps == 40
    no_kwarg = {k: v for k, v in kwargs.items() if k not in ("patience", "checkpoint_dir")}
    from_cfg = fit_module.fit(model, hf, data.hf_valid, replace(tiny, patience=2), **no_kwarg)  # train.patience
    assert from_cfg.stopped_early and from_cfg.steps == 15


def test_keep_last_ends_with_the_final_weights_keep_best_with_the_best_validation(setup, tmp_path):
    """Same seed, data and schedule: train.keep: last gives the weights of a run without validation
    data (validation changes nothing else); keep: best gives those of the same run stopped at its
    best validation step; both record the same validation history and the last selection value."""
    _, cfg, settings, data = setup
    ctx = Context(cfg, settings, data, tmp_path)
    model = ctx.fresh(ctx.spec((data.high,)), data.hf_pool, 0)
    hf = data.hf_subset(1.0, 0)
    kwargs = dict(budget=data.budget, steps=20, select=data.high, eval_every_steps=2, cache=ctx.cache,
                  log=lambda _: None)
    train = replace(cfg.train, lr=0.05, best_metric="energy_mae_mev_atom")  # the best is at step 12 of 20
    best = fit_module.fit(model, hf, data.hf_valid, replace(train, keep="best"), **kwargs)
    last = fit_module.fit(model, hf, data.hf_valid, replace(train, keep="last"), checkpoint_dir=tmp_path / "last",
                          **kwargs)
    unvalidated = fit_module.fit(model, hf, [], train, **kwargs)
    stopped = fit_module.fit(model, hf, [], train, stop=lambda gs: gs >= best.best_step, **kwargs)
    assert (best.kept, last.kept, unvalidated.kept) == ("best", "last", "last")
    assert last.history == best.history and last.best_step == best.best_step
    assert last.last_value == best.last_value == last.history[-1]["energy_mae_mev_atom"]
    jax.tree.map(np.testing.assert_array_equal, last.model.variables, unvalidated.model.variables)
    assert stopped.steps == best.best_step < 20  # the best is not the last here: the two weights differ
    jax.tree.map(np.testing.assert_array_equal, best.model.variables, stopped.model.variables)
    slots = Checkpoints(tmp_path / "last")  # keep: last copies and checkpoints no best weights
    assert slots.exists("last") and not slots.exists("best")
    slots.close()


@pytest.mark.slow
def test_joint_run_derives_share_weights_and_records_the_budget(setup, tmp_path, monkeypatch):
    """multi_fidelity with fidelity_share: the HF share of the weighted frames is the setting at any
    fraction; the results row records the budget, steps, HF structures seen, best step, compile time."""
    loss = {"fidelity_share": {"high": 0.4}}
    ctx = _ctx(setup, tmp_path, train={"loss": loss})
    lines = []
    ctx.log = lines.append
    calls = []
    original = fit_module.fit

    def spy(model, train, *args, **kwargs):
        calls.append((list(train), kwargs["fidelity_weights"]))
        return original(model, train, *args, **kwargs)

    monkeypatch.setattr(base_module, "fit", spy)
    outcome, row = run_strategy(ctx, "multi_fidelity", 0.5, 0)
    _, transfer_row = run_strategy(ctx, "transfer", 0.5, 0)
    (train, weights), *_ = calls
    n = {f: sum(s.fidelity == f for s in train) for f in ("low", "high")}
    assert weights["high"] * n["high"] / (weights["high"] * n["high"] + weights["low"] * n["low"]) == pytest.approx(0.4)
    assert any("fidelity_share" in line and "high" in line for line in lines)  # the derived weights are printed
    budget = ctx.settings.budget
    assert row["budget_steps"] == transfer_row["budget_steps"] == budget.total_steps
    assert row["steps"] == transfer_row["steps"] == budget.total_steps  # transfer: pre-training + fine-tuning
    assert row["hf_seen"] == outcome.stages[0].structures_seen["high"] > 0
    assert transfer_row["hf_seen"] > 0 and row["stopped_early"] == 0 and row["best_step"] is not None
    assert row["compile_seconds"] > 0  # the first run of its kind compiles
    # the selection value (HF validation, never test) is recorded next to the best step
    assert row["best_valid"] == pytest.approx(outcome.stages[-1].best_value, abs=1e-6)
    assert row["final_valid"] == pytest.approx(outcome.stages[-1].history[-1][ctx.cfg.train.best_metric], abs=1e-6)
    # mfjax train's path: fit derives the weights itself from train.loss.fidelity_share (and prints them)
    printed = []
    direct = original(outcome.model, train, ctx.data.hf_valid, ctx.cfg.train, budget=ctx.data.budget, steps=2,
                      cache=ctx.cache, log=printed.append)
    assert direct.fidelity_weights == pytest.approx(weights) and any("fidelity_share" in p for p in printed)
