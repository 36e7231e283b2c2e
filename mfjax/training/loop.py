"""The training loop: epochs of sharded steps, validation, checkpoints, exact resume, guards.

``train(cfg, resume=False) -> TrainResult`` is the library entry point under ``mfjax train``.
Position bookkeeping: after every applied (or skipped) step the loop knows (epoch, step index in
the epoch, global step); checkpoints store it with the state, so ``resume=True`` continues with the
very next batch of the same deterministic epoch order. SIGINT finishes the current step, saves
"last" and returns with ``interrupted=True`` (SIGTERM too, e.g. a cluster's pre-emption notice).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mfjax.config import Config, save_config
from mfjax.errors import MfjaxError
from mfjax.training import logs as logs_lib
from mfjax.training.batches import iterate_steps, steps_per_epoch
from mfjax.training.checkpoint import Checkpoints
from mfjax.training.evaluation import evaluate_batcher
from mfjax.training.metrics import format_table, mean_metric
from mfjax.training.setup import RunSetup, setup_run
from mfjax.training.sharding import host_value, init_distributed, put_replicated


class NonFiniteLossError(MfjaxError, RuntimeError):
    """Too many non-finite losses in a row; the message names the last batch's structures."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int = 0
    global_step: int = 0
    interrupted: bool = False
    best_value: float | None = None
    best_epoch: int | None = None
    valid_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    model_dir: Path | None = None


@contextmanager
def _sigint_flag():
    """Yield a dict whose "stop" turns True on SIGINT or SIGTERM (the step in flight finishes first)."""
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


class _Printer:
    def __init__(self, run_dir: Path, echo: bool = True):
        self.path = run_dir / "train.log"
        self.echo = echo

    def __call__(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)
        with open(self.path, "a") as handle:
            handle.write(text + "\n")


def _meta(epoch: int, step: int, global_step: int, run: dict) -> dict:
    return {"epoch": epoch, "step_in_epoch": step, "global_step": global_step, **run}


def train(
    cfg: Config,
    resume: bool = False,
    *,
    model_builder: Callable | None = None,
    echo: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``cfg.output.dir`` (see module docstring). ``stop_after_steps`` stops (as
    SIGINT would) once the global step reaches it — for tests and time-boxed jobs."""
    init_distributed(cfg.train.distributed)
    run_dir = Path(cfg.output.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _Printer(run_dir, echo)
    save_config(cfg, run_dir / "config.yaml")
    s = setup_run(cfg, model_builder=model_builder)
    log("Data accounting\n" + s.data.report.format())
    from mfjax.training.final import write_json_atomic

    write_json_atomic(run_dir / "data_report.json", s.data.report.to_dict())
    log(f"batch budget: {s.budget.n_graph - 1} structures, {s.budget.n_node} nodes, {s.budget.n_edge} edges per "
        f"device; {s.n_global_devices} device(s); {s.total_steps} steps over {cfg.train.epochs} epochs")
    ckpt = Checkpoints(run_dir)
    state = put_replicated(s.initial_state(), s.mesh)
    run = {"best_value": None, "best_epoch": None, "nonfinite_in_row": 0, "epoch_loss_sum": 0.0,
           "epoch_fid_sum": [0.0] * len(s.data.fidelities), "epoch_steps": 0}
    epoch, start, global_step = 0, 0, 0
    if resume:
        restored = ckpt.restore("last", state)
        if restored is None:
            log("--resume: no checkpoint in this run directory; starting from scratch")
        else:
            state, meta = restored
            epoch, start, global_step = meta["epoch"], meta["step_in_epoch"], meta["global_step"]
            run.update({k: meta[k] for k in run if k in meta})
            log(f"resumed at epoch {epoch + 1}, step {start} of the epoch (global step {global_step})")
    steps_log = logs_lib.step_log(run_dir, s.data.fidelities)
    metrics_log = logs_lib.metrics_log(run_dir, s.data.fidelities)
    steps_log.truncate(lambda r: int(r["step"]) <= global_step)
    metrics_log.truncate(lambda r: int(r["epoch"]) <= epoch)
    result = TrainResult(run_dir=run_dir, global_step=global_step, epochs_done=epoch)
    t0 = time.perf_counter()
    with _sigint_flag() as flag:
        while epoch < cfg.train.epochs:
            state, global_step, stopped = _run_epoch(s, state, ckpt, run, epoch, start, global_step, steps_log, log,
                                                     flag, stop_after_steps)
            result.global_step = global_step
            if stopped:
                ckpt.save("last", state, _meta(epoch, stopped, global_step, run))
                log(f"interrupted: saved the last checkpoint at epoch {epoch + 1}, step {stopped} "
                    f"(global step {global_step}); continue with --resume")
                result.interrupted = True
                ckpt.close()
                return result
            result.valid_metrics = _end_epoch(s, state, ckpt, run, epoch, global_step, metrics_log, log, t0)
            epoch, start = epoch + 1, 0
            run.update(epoch_loss_sum=0.0, epoch_fid_sum=[0.0] * len(s.data.fidelities), epoch_steps=0)
            ckpt.save("last", state, _meta(epoch, 0, global_step, run))
            result.epochs_done = epoch
    from mfjax.training.final import finish_run

    finish_run(s, state, ckpt, result, run, log)
    ckpt.close()
    return result


def _run_epoch(s: RunSetup, state, ckpt, run, epoch, start, global_step, steps_log, log, flag, stop_after):
    """Steps of one epoch from ``start``; returns (state, global_step, stopped step index or 0)."""
    cfg = s.cfg
    n_steps = steps_per_epoch(s.batchers["train"], epoch, s.n_global_devices)
    bar = None
    if cfg.output.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, initial=start, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   dynamic_ncols=True)
    fids = s.data.fidelities
    for step in iterate_steps(s.batchers["train"], epoch, s.n_devices, s.mesh, start=start,
                              device_offset=s.device_offset, n_global_devices=s.n_global_devices):
        state, out = s.train_step(state, step.batch)
        out = host_value(out)
        global_step += 1
        steps_log.append(logs_lib.step_row(global_step, epoch, step.index, out, fids))
        if bool(out["finite"]):
            run["nonfinite_in_row"] = 0
            run["epoch_loss_sum"] += float(out["loss"])
            run["epoch_fid_sum"] = [a + float(b) for a, b in zip(run["epoch_fid_sum"], out["per_fidelity_loss"])]
            run["epoch_steps"] += 1
        else:
            run["nonfinite_in_row"] += 1
            names = [s.batchers["train"].structures[i].where for i in step.structures]
            message = (f"non-finite loss/gradient at global step {global_step} (loss={float(out['loss'])}, "
                       f"grad norm={float(out['grad_norm'])}): step skipped; batch structures: {'; '.join(names)}")
            log(message)
            if run["nonfinite_in_row"] >= cfg.train.max_nonfinite_steps:
                ckpt.save("last", state, _meta(epoch, step.index + 1, global_step, run))
                raise NonFiniteLossError(
                    f"{run['nonfinite_in_row']} non-finite losses in a row (train.max_nonfinite_steps = "
                    f"{cfg.train.max_nonfinite_steps}); stopping. Last batch: {'; '.join(names)}. Check these "
                    f"structures (mfjax check-data) or lower train.lr / set train.grad_clip."
                )
        if bar is not None:
            n = max(run["epoch_steps"], 1)
            bar.set_postfix({f"loss_{f}": f"{v / n:.3g}" for f, v in zip(fids, run["epoch_fid_sum"])}, refresh=False)
            bar.update(1)
        every = cfg.train.checkpoint_every_steps
        stop = flag["stop"] or (stop_after is not None and global_step >= stop_after)
        if stop:
            if bar is not None:
                bar.close()
            return state, global_step, step.index + 1
        if every and global_step % every == 0 and step.index + 1 < n_steps:
            ckpt.save("last", state, _meta(epoch, step.index + 1, global_step, run))
    if bar is not None:
        bar.close()
    return state, global_step, 0


def _end_epoch(s: RunSetup, state, ckpt, run, epoch, global_step, metrics_log, log, t0) -> dict:
    cfg = s.cfg
    n = max(run["epoch_steps"], 1)
    train_loss = run["epoch_loss_sum"] / n
    per_fid = [v / n for v in run["epoch_fid_sum"]]
    valid: dict = {}
    is_eval = (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs
    if is_eval and len(s.batchers["valid"]):
        valid, _ = evaluate_batcher(s.eval_step, state.variables(), s.batchers["valid"], s.data.fidelities,
                                    s.n_devices, s.mesh, device_offset=s.device_offset,
                                    n_global_devices=s.n_global_devices)
    lr = float(np.asarray(s.schedule(max(global_step - 1, 0))))
    metrics_log.append(logs_lib.metrics_row(epoch + 1, global_step, train_loss, per_fid, valid, s.data.fidelities,
                                            lr, time.perf_counter() - t0))
    losses = "  ".join(f"{f} {v:.4g}" for f, v in zip(s.data.fidelities, per_fid))
    log(f"epoch {epoch + 1}/{cfg.train.epochs}  step {global_step}  train loss {train_loss:.4g} ({losses})  lr {lr:.3g}")
    if valid:
        log(format_table(valid, title=f"validation, epoch {epoch + 1}"))
        value = mean_metric(valid, cfg.train.best_metric)
        if math.isfinite(value) and (run["best_value"] is None or value < run["best_value"]):
            run["best_value"], run["best_epoch"] = value, epoch + 1
            ckpt.save("best", state, _meta(epoch + 1, 0, global_step, run))
            log(f"new best {cfg.train.best_metric} = {value:.5g} (epoch {epoch + 1})")
    return valid
