"""``fit``: the one training loop under ``mfjax train`` and every ablation stage.

A fit trains a ``Model`` for a budget of optimiser steps (or whole epochs, which become a step
budget) over one shuffled stream of the training structures, sharded over every local device:
each step takes the next D batches of the epoch's deterministic plan. It validates every
``eval_every_steps`` steps, at the end of every ``eval_every_epochs``-th epoch and after the last
step, keeps the weights (EMA weights when ``train.ema`` is on) with the lowest ``metric`` on the
``select`` fidelity (mean over fidelities when None), and returns them.

With a ``checkpoint_dir``, Orbax checkpoints (``checkpoint.Checkpoints``) hold the training state
and the loop's position (epoch, step in the epoch, global step, running sums, best value, history):
"last" every ``train.checkpoint_every_steps`` steps, at epoch ends (``checkpoint_epochs``), after
the last step and on SIGINT/SIGTERM/``stop``; "best" at every improvement (not with ``train.keep:
last``). ``resume=True`` continues from "last" with the very next batch, so a killed fit ends
exactly as an uninterrupted one. A fit started without ``resume`` removes old checkpoints of the directory.

Early stopping (``patience``, default ``train.patience``): the fit stops after that many
validations in a row without a new best (``FitResult.stopped_early``; the best weights are kept, a
resume does not train on). Per-fidelity weights (``fidelity_weights``, else derived from
``train.loss.fidelity_share`` or taken from ``train.loss.fidelity_weights``) scale the training
structures' label weights, so runs with different weights share one compiled step
(``train.loss.fidelity_weighting: repeats``: weights > 1 become repeats of the structures).

``train.max_nonfinite_steps`` non-finite losses in a row (each such step is skipped by the step
itself) raise :class:`NonFiniteLossError`, the one error of a diverging fit.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mfjax.data.batching import BatchBudget, GraphBatcher
from mfjax.data.structures import Structure
from mfjax.errors import DataError, MfjaxError
from mfjax.model import Model
from mfjax.training.batches import iterate_steps, steps_per_epoch, total_steps
from mfjax.training.checkpoint import Checkpoints
from mfjax.training.compiled import StepCache
from mfjax.training.evaluation import evaluate_batcher
from mfjax.training.loss import fidelity_weight_vector, resolve_fidelity_weights
from mfjax.training.metrics import mean_metric
from mfjax.training.optim import make_optimizer
from mfjax.training.sharding import host_value, make_mesh, mesh_layout, put_replicated
from mfjax.training.state import create_state

__all__ = ["Callback", "FitResult", "NonFiniteLossError", "fit"]


class NonFiniteLossError(MfjaxError, RuntimeError):
    """Too many non-finite losses in a row; the message names the last batch's structures."""


class Callback:
    """Hooks of a fit (all optional). ``logs`` are host values of the step's logs (loss,
    per_fidelity_loss, grad_norm, lr, finite)."""

    def on_start(self, epoch: int, step_in_epoch: int, global_step: int, total: int) -> None:
        """After any resume: the position the fit starts from and its step budget."""

    def on_step(self, global_step: int, epoch: int, index: int, logs: Mapping[str, Any]) -> None:
        """After every applied (or skipped) step; ``index`` is the step's number within the epoch."""

    def on_validation(self, global_step: int, epoch: int, metrics: dict, value: float | None, best: bool,
                      epoch_end: bool) -> None:
        """After a validation: per-fidelity metrics, the selection value, whether it is a new best,
        and whether it ran at the end of ``epoch`` (before ``on_epoch_end``)."""

    def on_epoch_end(self, epoch: int, global_step: int, train_loss: float, per_fidelity: Sequence[float],
                     valid: dict, lr: float) -> None:
        """After the last step of an epoch (and its validation, if any; else ``valid`` is {})."""


@dataclass
class FitResult:
    """model: the best-validation weights (EMA when kept; the last ones without validation data or with
    ``train.keep: last``; ``kept`` says which);
    steps: optimiser steps done; epochs: epochs completed; best_step/best_epoch/best_value: where
    the best was found; last_value: the selection value at the last validation; seconds: wall time
    without compilation (summed over resumed parts);
    compile_seconds: first calls of newly compiled steps; history: one entry per validation;
    valid_metrics: the last validation; interrupted: stopped by a signal or ``stop`` (state saved in
    "last"); stopped_early: stopped by ``patience``; structures_seen: {fidelity: training structures
    in the batches of every step}; fidelity_weights: the per-fidelity weights used."""

    model: Model
    steps: int
    epochs: int = 0
    best_step: int | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    seconds: float = 0.0
    compile_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    valid_metrics: dict = field(default_factory=dict)
    interrupted: bool = False
    stopped_early: bool = False
    structures_seen: dict = field(default_factory=dict)
    fidelity_weights: dict = field(default_factory=dict)
    kept: str = "last"
    last_value: float | None = None


@contextmanager
def _stop_signals():
    """A dict whose "stop" turns True on SIGINT or SIGTERM (the step in flight finishes first)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _selection(metrics: dict, select: str | None, metric: str) -> float | None:
    value = mean_metric(metrics, metric) if select is None else (metrics.get(select) or {}).get(metric)
    return None if value is None or not math.isfinite(value) else float(value)


def _open_checkpoints(directory: Path, resume: bool, log: Callable[[str], None]) -> Checkpoints:
    ckpt = Checkpoints(directory)
    if not resume and (ckpt.exists("last") or ckpt.exists("best")):
        ckpt.close()
        shutil.rmtree(Path(directory) / "checkpoints")
        log(f"{directory}: removed the checkpoints of an earlier fit (not resuming)")
        ckpt = Checkpoints(directory)
    return ckpt


def fit(
    model: Model,
    train: Sequence[Structure],
    valid: Sequence[Structure],
    train_cfg,
    *,
    budget: BatchBudget,
    steps: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    select: str | None = None,
    metric: str | None = None,
    fidelity_weights: Mapping[str, float] | None = None,
    trainable: Sequence[str] | None = None,
    eval_every_steps: int | None = None,
    eval_every_epochs: int | None = None,
    patience: int | None = None,
    schedule: tuple[int, int] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_epochs: bool = True,
    resume: bool = False,
    compute_stress: bool | None = None,
    cache: StepCache | None = None,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callback] = (),
    stop: Callable[[int], bool] | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` on ``train`` for ``steps`` optimiser steps (or ``epochs`` passes).

    train_cfg: a ``TrainConfig`` (optimiser, schedule, EMA, loss, clipping, non-finite guard,
    checkpoint interval; ``seed`` and ``best_metric`` unless given here). budget: the batch budget of
    every batch. select/metric: the fidelity and validation metric that pick the best weights.
    fidelity_weights: per-fidelity structure weights by name (default ``train.loss.fidelity_weights``).
    trainable: top-level param groups that train (None = all), e.g. ("readout",). cache: compiled
    steps shared with other fits. stop(global_step) -> True stops (as SIGINT does). patience:
    validations without improvement before stopping (None = ``train.patience``; 0 = off).
    schedule: (start, total) of the learning-rate schedule (default (0, budget)): the first step
    uses the schedule's value at ``start`` of a decay over ``total`` steps.
    """
    if not train:
        raise DataError("fit: no training structures")
    if (steps is None) == (epochs is None):
        raise ValueError("fit: give exactly one of steps and epochs")
    cache = StepCache() if cache is None else cache
    mesh = make_mesh() if mesh is None else mesh
    n_local, n_global, offset = mesh_layout(mesh)
    seed = train_cfg.seed if seed is None else int(seed)
    metric = train_cfg.best_metric if metric is None else metric
    patience = train_cfg.patience if patience is None else (int(patience) or None)
    if fidelity_weights is None:
        fidelity_weights, how = resolve_fidelity_weights(train_cfg.loss, model.fidelities, train)
        if train_cfg.loss.fidelity_share:
            log(how)
    wvec = fidelity_weight_vector(model.fidelities, dict(fidelity_weights))
    train = _weighted(train, model.fidelities, wvec, repeats=train_cfg.loss.fidelity_weighting == "repeats")
    if compute_stress is None:
        compute_stress = train_cfg.compute_stress
    if compute_stress is None:
        compute_stress = any(s.stress is not None for s in train)
    dtype = np.dtype(model.dtype)
    fids = model.fidelities
    batcher = GraphBatcher(train, model.cutoff, model.spec.fidelity_map, budget, shuffle=True, seed=seed)
    valid_batcher = GraphBatcher(valid, model.cutoff, model.spec.fidelity_map, budget, shuffle=False) if valid else None
    total = int(steps) if steps is not None else total_steps(batcher, int(epochs), n_global)
    start_lr, total_lr = (0, total) if schedule is None else (int(schedule[0]), int(schedule[1]))
    optimizer, _ = make_optimizer(train_cfg, total_lr, start_lr)
    compile0 = cache.compile_seconds
    step_fn = cache.train_step(model, train_cfg, fidelity_weights={}, trainable=trainable,
                               compute_stress=compute_stress, mesh=mesh)
    eval_stress = bool(compute_stress) or any(s.stress is not None for s in valid)
    eval_fn = cache.eval_step(model, compute_stress=eval_stress, mesh=mesh)
    state = put_replicated(create_state(model.variables, optimizer, seed, train_cfg.ema is not None), mesh)

    run: dict[str, Any] = {"best_value": None, "best_step": None, "best_epoch": None, "last_value": None,
                           "nonfinite_in_row": 0,
                           "epoch_loss_sum": 0.0, "epoch_fid_sum": [0.0] * len(fids), "epoch_steps": 0,
                           "history": [], "seconds": 0.0, "lr": None, "stopped_early": False,
                           "seen": [0] * len(fids)}
    fid_index = np.array([model.spec.fidelity_map[s.fidelity] for s in batcher.structures], np.int64)
    epoch, start, gs = 0, 0, 0
    best_variables = None
    ckpt = _open_checkpoints(Path(checkpoint_dir), resume, log) if checkpoint_dir is not None else None
    if ckpt is not None and resume:
        restored = ckpt.restore("last", state)
        if restored is None:
            log(f"{checkpoint_dir}: no checkpoint to resume from; starting from scratch")
        else:
            state, saved = restored
            epoch, start, gs = saved["epoch"], saved["step_in_epoch"], saved["global_step"]
            run.update({k: saved[k] for k in run if k in saved})
            best = ckpt.restore("best", state) if ckpt.exists("best") else None
            best_variables = None if best is None else jax.device_get(best[0].variables())
            log(f"resumed at epoch {epoch + 1}, step {start} of the epoch (global step {gs} of {total})")
            if saved.get("total_steps", total) != total:
                log(f"warning: the checkpoint was written for a budget of {saved['total_steps']} steps; continuing to "
                    f"{total} with the checkpoint's learning-rate schedule")

    def meta(e: int, k: int) -> dict:
        return {"epoch": e, "step_in_epoch": k, "global_step": gs, "total_steps": total, **run}

    completed = epoch  # epochs completed (the position's epoch is the current one)
    for cb in callbacks:
        cb.on_start(epoch, start, gs, total)
    every = int(train_cfg.checkpoint_every_steps)
    t0 = time.perf_counter()
    seconds0 = float(run["seconds"])
    interrupted, valid_metrics = False, {}

    def elapsed() -> float:
        return seconds0 + time.perf_counter() - t0 - (cache.compile_seconds - compile0)

    try:
        with _stop_signals() as flag:
            while gs < total and not run["stopped_early"]:
                n_steps = steps_per_epoch(batcher, epoch, n_global)
                for step in iterate_steps(batcher, epoch, n_local, mesh, start=start, device_offset=offset,
                                          n_global_devices=n_global, dtype=dtype):
                    state, out = step_fn(state, step.batch)
                    out = host_value(out)
                    gs += 1
                    seen = np.bincount(fid_index[list(step.structures)], minlength=len(fids))
                    run["seen"] = [int(a + b) for a, b in zip(run["seen"], seen)]
                    for cb in callbacks:
                        cb.on_step(gs, epoch, step.index, out)
                    if bool(out["finite"]):
                        run["nonfinite_in_row"] = 0
                        run["epoch_loss_sum"] += float(out["loss"])
                        run["epoch_fid_sum"] = [a + float(b) for a, b in zip(run["epoch_fid_sum"], out["per_fidelity_loss"])]
                        run["epoch_steps"] += 1
                        run["lr"] = float(out["lr"])
                    else:
                        _nonfinite(run, out, gs, [batcher.structures[i].where for i in step.structures], train_cfg, log,
                                   lambda: ckpt is not None and ckpt.save("last", state, meta(epoch, step.index + 1)))
                    epoch_end = step.index + 1 >= n_steps
                    due = (gs >= total or (eval_every_steps and gs % eval_every_steps == 0)
                           or (epoch_end and eval_every_epochs and (epoch + 1) % eval_every_epochs == 0))
                    metrics = {}
                    if due and valid_batcher is not None:
                        metrics, _ = evaluate_batcher(eval_fn, state.variables(), valid_batcher, fids, n_local, mesh,
                                                      device_offset=offset, n_global_devices=n_global, dtype=dtype)
                        valid_metrics = metrics
                        value = _selection(metrics, select, metric)
                        run["last_value"] = value
                        is_best = value is not None and (run["best_value"] is None or value < run["best_value"])
                        run["history"].append({"step": gs, "epoch": epoch + int(epoch_end), "loss": float(out["loss"]),
                                               metric: value})
                        if is_best:
                            run.update(best_value=value, best_step=gs, best_epoch=epoch + int(epoch_end))
                            if train_cfg.keep == "best":  # keep: last never uses them: no copy, no checkpoint
                                best_variables = jax.device_get(state.variables())
                                if ckpt is not None:
                                    ckpt.save("best", state, meta(epoch, step.index + 1))
                        for cb in callbacks:
                            cb.on_validation(gs, epoch, metrics, value, is_best, epoch_end)
                        if patience and gs < total and run["best_value"] is not None and _since_best(run) >= patience:
                            run["stopped_early"] = True
                            log(f"early stop at step {gs} of {total}: {patience} validations without a new best "
                                f"(best {metric} {run['best_value']:.5g} at step {run['best_step']})")
                    if epoch_end:
                        completed = epoch + 1
                        n = max(run["epoch_steps"], 1)
                        for cb in callbacks:
                            cb.on_epoch_end(epoch, gs, run["epoch_loss_sum"] / n, [v / n for v in run["epoch_fid_sum"]],
                                            metrics, run["lr"] if run["lr"] is not None else float("nan"))
                        run.update(epoch_loss_sum=0.0, epoch_fid_sum=[0.0] * len(fids), epoch_steps=0)
                    stopping = flag["stop"] or (stop is not None and stop(gs))
                    if ckpt is not None and (gs >= total or stopping or run["stopped_early"] or (every and gs % every == 0)
                                             or (epoch_end and checkpoint_epochs)):
                        run["seconds"] = elapsed()
                        ckpt.save("last", state, meta(epoch + 1, 0) if epoch_end else meta(epoch, step.index + 1))
                    if stopping and gs < total:
                        interrupted = True
                        log(f"interrupted: saved the last checkpoint at epoch {epoch + 1}, step {step.index + 1} "
                            f"(global step {gs}); continue with --resume" if ckpt is not None else
                            f"interrupted at global step {gs} (no checkpoint directory)")
                        break
                    if gs >= total or run["stopped_early"]:
                        break
                if interrupted or gs >= total or run["stopped_early"]:
                    break
                epoch, start = epoch + 1, 0
    finally:
        if ckpt is not None:
            ckpt.close()
    kept = "best" if train_cfg.keep == "best" and best_variables is not None else "last"
    variables = best_variables if kept == "best" else jax.device_get(state.variables())
    return FitResult(
        model=model.replace(variables=variables), steps=gs, epochs=completed, best_step=run["best_step"],
        best_epoch=run["best_epoch"], best_value=run["best_value"], seconds=elapsed(),
        compile_seconds=cache.compile_seconds - compile0, history=list(run["history"]), valid_metrics=valid_metrics,
        interrupted=interrupted, stopped_early=bool(run["stopped_early"]),
        structures_seen=dict(zip(fids, run["seen"])), fidelity_weights=dict(zip(fids, wvec.tolist())), kept=kept,
        last_value=run["last_value"],
    )


def _since_best(run: dict) -> int:
    """Validations (with a value) after the best one."""
    return sum(1 for h in run["history"] if h["step"] > (run["best_step"] or 0))


def _weighted(structures: Sequence[Structure], fidelities: Sequence[str], weights: np.ndarray,
              repeats: bool = False) -> list[Structure]:
    """``structures`` with their label weights multiplied by their fidelity's weight ([n_fid]);
    with ``repeats`` a fidelity of weight w > 1 comes round(w) times with weight w / round(w)."""
    by_name = dict(zip(fidelities, weights.tolist()))
    out: list[Structure] = []
    for s in structures:
        w = by_name.get(s.fidelity, 1.0)
        k = max(1, int(round(w))) if repeats and w > 1.0 else 1
        scaled = s if w == k else replace(s, weight=tuple(x * w / k for x in s.weight))
        out.extend([scaled] * k)
    return out


def _nonfinite(run: dict, out, gs: int, names: list[str], train_cfg, log, save: Callable[[], Any]) -> None:
    """Count a skipped non-finite step; after ``train.max_nonfinite_steps`` in a row save and raise."""
    run["nonfinite_in_row"] += 1
    log(f"non-finite loss/gradient at global step {gs} (loss={float(out['loss'])}, grad norm="
        f"{float(out['grad_norm'])}): step skipped; batch structures: {'; '.join(names)}")
    if run["nonfinite_in_row"] >= train_cfg.max_nonfinite_steps:
        save()
        raise NonFiniteLossError(
            f"{run['nonfinite_in_row']} non-finite losses in a row (train.max_nonfinite_steps = "
            f"{train_cfg.max_nonfinite_steps}); stopping. Last batch: {'; '.join(names)}. Check these "
            f"structures (mfjax check-data) or lower train.lr / set train.grad_clip."
        )
