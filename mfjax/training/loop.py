"""``train(cfg, resume=False) -> TrainResult``: the library entry point under ``mfjax train``.

It is :func:`mfjax.training.fit.fit` with ``train.epochs`` as the step budget and the run
directory as the checkpoint directory (Orbax "last" every ``train.checkpoint_every_steps`` steps
and at epoch ends, "best" at each improvement), plus the run's files: ``config.yaml``,
``data_report.json``, ``train.log``, ``steps.csv`` (one row per optimiser step), ``metrics.csv``
(per epoch; validation every ``train.eval_every`` epochs), then the test table, parity plots and
the exported model (``final.finish_run``). ``resume=True`` continues with the very next batch and
truncates the CSV files to the checkpoint, so a killed and resumed run writes the same files as an
uninterrupted one. SIGINT/SIGTERM finish the current step, save "last" and return
``interrupted=True``.

Safe resume (``runstate``): the run directory also holds ``data_fingerprint.json`` and, after a
resume, ``resume_log.jsonl``; ``config.yaml`` is written at the first start only. Starting into a
directory that holds a run needs ``resume`` or ``overwrite``; ``resume`` refuses changed data, split,
model, loss (one line naming the keys), allows harmless changes (epochs, logging, intervals) and
changed optimiser settings with ``allow_config_change``, recording them. Nothing is written before
the config, data and model are known to be good. With several processes only process 0 writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from mfjax.config import Config
from mfjax.data.batching import budget_outliers
from mfjax.data.dataset import load_data
from mfjax.errors import DataError
from mfjax.model import Model
from mfjax.training import logs as logs_lib
from mfjax.training import runstate
from mfjax.training.ensemble import EnsembleStepCache
from mfjax.training.final import finish_run, write_json_atomic
from mfjax.training.fit import Callback, FitResult, NonFiniteLossError, fit
from mfjax.training.metrics import format_table
from mfjax.training.setup import batch_budget, best_fidelity, initial_model
from mfjax.training.sharding import init_distributed, is_main_process, make_mesh, mesh_layout
from mfjax.utils.configtools import to_dict

__all__ = ["train", "TrainResult", "NonFiniteLossError"]


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
    model: Model | None = None
    fit: FitResult | None = None


#: What ``overwrite`` removes from a run directory (and nothing else); MARKERS make it a run.
RUN_ENTRIES = (runstate.CONFIG, runstate.FINGERPRINT, runstate.RESUME_LOG, "data_report.json", "train.log",
               "steps.csv", "metrics.csv", "test_metrics.json", "checkpoints", "plots", "model")
MARKERS = (runstate.CONFIG, "checkpoints/*/*", "steps.csv", "model")


class _Printer:
    """Prints (process 0) and appends to ``train.log`` once ``open`` (lines before it are kept)."""

    def __init__(self, run_dir: Path, echo: bool = True, write: bool = True):
        self.path = run_dir / "train.log"
        self.echo, self.write = echo, write
        self.pending: list[str] | None = []

    def open(self) -> None:
        lines, self.pending = self.pending or [], None
        if self.write and lines:
            with open(self.path, "a") as handle:
                handle.write("".join(line + "\n" for line in lines))

    def __call__(self, text: str) -> None:
        if self.echo:
            print(text, flush=True)
        if self.pending is not None:
            self.pending.append(text)
        elif self.write:
            with open(self.path, "a") as handle:
                handle.write(text + "\n")


class RunFiles(Callback):
    """steps.csv, metrics.csv, the progress bar and the log lines of a ``mfjax train`` run."""

    def __init__(self, cfg: Config, run_dir: Path, fidelities: Sequence[str], select: str, log, budget_line: str,
                 write: bool = True, opening: Callable[[], None] = lambda: None):
        self.cfg, self.fids, self.select, self.log, self.budget_line = cfg, tuple(fidelities), select, log, budget_line
        self.run_dir, self.opening = run_dir, opening
        self.write = write  # process 0 only: the CSV files are shared by every process
        self.steps_log = self.metrics_log = None
        self.bar = None
        self.pending: list[str] = []
        self.t0 = 0.0

    def on_start(self, epoch: int, step_in_epoch: int, global_step: int, total: int) -> None:
        self.opening()  # the run directory's files, once the checkpoint (if any) is restored
        if self.write:
            self.steps_log = logs_lib.step_log(self.run_dir, self.fids)
            self.metrics_log = logs_lib.metrics_log(self.run_dir, self.fids)
            self.steps_log.truncate(lambda r: int(r["step"]) <= global_step)
            self.metrics_log.truncate(lambda r: int(r["epoch"]) <= epoch)
        self.log(f"{self.budget_line}; {total} steps over {self.cfg.train.epochs} epochs")
        if self.cfg.output.progress and self.write:
            self.bar = tqdm(total=total, initial=global_step, desc="training", leave=False, dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def on_step(self, global_step: int, epoch: int, index: int, logs: Mapping[str, Any]) -> None:
        if self.write:
            self.steps_log.append(logs_lib.step_row(global_step, epoch, index, logs, self.fids))
        if self.bar is not None:
            self.bar.set_postfix({"epoch": epoch + 1, "loss": f"{float(logs['loss']):.3g}"}, refresh=False)
            self.bar.update(1)

    def on_validation(self, global_step, epoch, metrics, value, best, epoch_end) -> None:
        lines = [format_table(metrics, title=f"validation, epoch {epoch + 1}" if epoch_end else
                              f"validation, step {global_step}")]
        if best:
            where = f"epoch {epoch + 1}" if epoch_end else f"step {global_step}"
            lines.append(f"new best {self.select} {self.cfg.train.best_metric} = {value:.5g} ({where})")
        if epoch_end:
            self.pending = lines  # printed after the epoch's line
        else:
            for line in lines:
                self.log(line)

    def on_epoch_end(self, epoch, global_step, train_loss, per_fidelity, valid, lr) -> None:
        if self.write:
            self.metrics_log.append(logs_lib.metrics_row(epoch + 1, global_step, train_loss, per_fidelity, valid, self.fids,
                                                     lr, time.perf_counter() - self.t0))
        losses = "  ".join(f"{f} {v:.4g}" for f, v in zip(self.fids, per_fidelity))
        self.log(f"epoch {epoch + 1}/{self.cfg.train.epochs}  step {global_step}  train loss {train_loss:.4g} "
                 f"({losses})  lr {lr:.3g}")
        for line in self.pending:
            self.log(line)
        self.pending = []

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(cfg: Config, resume: bool = False, *, overwrite: bool = False, allow_config_change: bool = False,
          echo: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    """Train ``cfg`` into ``cfg.output.dir`` (see the module docstring). ``resume``: continue the
    run there; ``overwrite``: replace it; ``allow_config_change``: let a resume change optimiser
    settings. ``stop_after_steps`` stops (as SIGINT would) once the global step reaches it — for
    tests and time-boxed jobs."""
    init_distributed(cfg.train.distributed)
    run_dir = Path(cfg.output.dir)
    main_process = is_main_process()
    runstate.prepare_dir(run_dir, resume=resume, overwrite=overwrite, markers=MARKERS, owned=RUN_ENTRIES)
    log = _Printer(run_dir, echo and main_process, write=main_process)
    data = load_data(cfg.data)
    if not data.train:
        raise DataError("the training split is empty: add data or lower data.split.valid/test")
    config_dict, fingerprint = to_dict(cfg), runstate.fingerprint(data)
    changes = runstate.check_resume(run_dir, config_dict, fingerprint, policy=runstate.TRAIN_POLICY,
                                    allow_config_change=allow_config_change) if resume else []
    log("Data accounting\n" + data.report.format())
    source = "data.fidelities" if cfg.data.fidelities is not None else "the order first seen in the data files"
    log(f"fidelities (index order, from {source}): {', '.join(data.fidelities)}")
    everything = data.train + data.valid + data.test
    budget = batch_budget(cfg, everything)
    for warning in budget_outliers(everything, cfg.data.cutoff):
        log(f"warning: {warning}")
    select, why = best_fidelity(cfg.train, data)
    if not any(s.fidelity == select for s in data.valid):
        log(f"best weights: no {select!r} validation frames; selecting on the mean over fidelities")
        select_arg = None
    else:
        log(f"best weights: lowest validation {cfg.train.best_metric} of {select!r} ({why})")
        select_arg = select
    model, stats = initial_model(cfg, data)
    mesh = make_mesh()
    n_local, n_global, _ = mesh_layout(mesh)
    budget_line = (f"batch budget: {budget.n_graph - 1} structures, {budget.n_node} nodes, {budget.n_edge} edges per "
                   f"device; {n_global} device(s)")

    def opening() -> None:  # nothing is written before the config, data, model and checkpoint are good
        for line in runstate.record_start(run_dir, config_dict, fingerprint, resume=resume, changes=changes,
                                          allow_config_change=allow_config_change):
            log(line)
        log.open()
        if main_process:
            write_json_atomic(run_dir / "data_report.json", data.report.to_dict())

    files = RunFiles(cfg, run_dir, data.fidelities, select if select_arg else "mean", log, budget_line,
                     write=main_process, opening=opening)
    cache = EnsembleStepCache()  # trains an ensemble model (train.ensemble) in one vmapped step; else StepCache
    stop = (lambda gs: gs >= stop_after_steps) if stop_after_steps is not None else None
    try:
        result = fit(model, data.train, data.valid, cfg.train, budget=budget, epochs=cfg.train.epochs,
                     select=select_arg, eval_every_epochs=cfg.train.eval_every,
                     eval_every_steps=cfg.train.eval_every_steps, checkpoint_dir=run_dir, resume=resume,
                     cache=cache, mesh=mesh, callbacks=[files], stop=stop, log=log)
    finally:
        files.close()
    out = TrainResult(run_dir=run_dir, epochs_done=result.epochs, global_step=result.steps,
                      interrupted=result.interrupted, best_value=result.best_value, best_epoch=result.best_epoch,
                      valid_metrics=result.valid_metrics, model=result.model, fit=result)
    if result.interrupted:
        return out
    summary = {"epochs": result.epochs, "steps": result.steps, "best_metric": cfg.train.best_metric,
               "best_fidelity": select_arg, "best_value": result.best_value, "best_epoch": result.best_epoch,
               "best_step": result.best_step, "n_train": len(data.train), "n_valid": len(data.valid),
               "n_test": len(data.test), "statistics": stats}
    out.test_metrics, out.model_dir = finish_run(cfg, result, data.test, budget, summary, cache=cache, mesh=mesh,
                                                 plots=cfg.output.plots and n_local == n_global, log=log)
    return out
