"""What strategies share: the ablation ``Context`` (config, data, compiled steps, the cached LF
model, stage checkpoints) and the ``Outcome`` a strategy returns.

A strategy is a function ``run(ctx, hf_train, seed) -> Outcome``; ``hf_train`` is the HF training
subset of this (fraction, seed), identical for every strategy. The LF model (trained on all LF
training data) is the starting point of transfer, delta and append, and is trained once per seed.

Every stage is one :func:`mfjax.training.fit.fit` (``Context.fit``) that checkpoints into
``OUT/stages/<run>/<stage>/`` (``<run>`` = ``<strategy>_f<fraction>_s<seed>``, or
``lf_model_s<seed>`` for the LF pre-training), so ``mfjax ablate --resume`` continues a killed
stage from its last checkpoint, and a finished LF model is restored instead of retrained.

Budgets (``settings.budget``, see ``settings``): ``Context.stage_fit(kind, ...)`` trains a stage of
kind "scratch", "pretrain", "continue" or "delta" with that kind's steps and learning-rate
schedule, so that every strategy gets the same total number of optimiser steps; ``train.patience``
stops stages early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mfjax.config import Config
from mfjax.data.statistics import fit_e0, force_rms
from mfjax.data.structures import Structure
from mfjax.model import Model, ModelSpec
from mfjax.strategies.data import AblationData
from mfjax.strategies.settings import AblationSettings
from mfjax.training.compiled import StepCache
from mfjax.training.evaluation import evaluate, predict_structures
from mfjax.training.fit import Callback, FitResult, fit
from mfjax.training.loss import resolve_fidelity_weights
from mfjax.training.setup import example_graph
from mfjax.training.sharding import make_mesh

__all__ = ["Outcome", "Context", "StageInterrupted"]


class StageInterrupted(KeyboardInterrupt):
    """A stage stopped on SIGINT/SIGTERM after saving its checkpoint (continue with --resume)."""


@dataclass
class Outcome:
    """A trained strategy: the HF potential (a ``Model``; a Δ model for delta), its training stages,
    notes for the results table, whether the model also predicts the low fidelity (``low``), and
    the shared LF pre-training it started from (``shared``: counted in the step budget, not in the
    wall time, which ``lf_model`` rows report once per seed)."""

    model: Model
    stages: list[FitResult]
    notes: dict[str, Any] = field(default_factory=dict)
    low: str | None = None
    shared: list[FitResult] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Wall time of the own stages, without compilation."""
        return float(sum(f.seconds for f in self.stages))

    @property
    def compile_seconds(self) -> float:
        """Compilation of the steps this run's own stages were the first to use."""
        return float(sum(f.compile_seconds for f in self.stages))

    @property
    def steps(self) -> int:
        """Optimiser steps of every stage, the shared pre-training included (the equal-budget count)."""
        return int(sum(f.steps for f in self.shared + self.stages))

    def seen(self, fidelity: str) -> int:
        """Training structures of ``fidelity`` in the batches of every step of every stage."""
        return int(sum(f.structures_seen.get(fidelity, 0) for f in self.shared + self.stages))

    @property
    def best_step(self) -> int | None:
        """Step of the best weights in the last stage (the one that made the model)."""
        return self.stages[-1].best_step if self.stages else None

    @property
    def best_valid(self) -> float | None:
        """The last stage's selection value (``train.best_metric`` on its validation frames) at ``best_step``:
        what a strategy or recipe is chosen on, never the test split."""
        return self.stages[-1].best_value if self.stages else None

    @property
    def final_valid(self) -> float | None:
        """The last stage's selection value at its last validation: that of the kept weights with
        ``train.keep: last``."""
        return self.stages[-1].last_value if self.stages else None

    @property
    def stopped_early(self) -> bool:
        """Whether the last stage stopped on ``train.patience`` before its budget."""
        return bool(self.stages and self.stages[-1].stopped_early)


class _StageLog(Callback):
    """One line per validation: step, loss and the selection value."""

    def __init__(self, label: str, select: str, metric: str, log: Callable[[str], None]):
        self.label, self.select, self.metric, self.log = label, select, metric, log
        self.total, self.loss = 0, math.nan

    def on_start(self, epoch, step_in_epoch, global_step, total) -> None:
        self.total = total

    def on_step(self, global_step, epoch, index, logs) -> None:
        self.loss = float(logs["loss"])

    def on_validation(self, global_step, epoch, metrics, value, best, epoch_end) -> None:
        shown = "-" if value is None else f"{value:.4g}"
        self.log(f"  {self.label} step {global_step}/{self.total}  loss {self.loss:.4g}  "
                 f"valid {self.select} {self.metric} {shown}")


class Context:
    """Config, data, compiled steps and stage checkpoints of one ablation, plus the LF model cache.

    resume: continue stages from their checkpoints (else a stage starts afresh); run_tag: the
    ``<strategy>_f<fraction>_s<seed>`` directory of the current run (set by ``ablate``).
    """

    def __init__(self, cfg: Config, settings: AblationSettings, data: AblationData, out_dir: str | Path,
                 log: Callable[[str], None] = print, *, resume: bool = False, cache: StepCache | None = None):
        self.cfg, self.settings, self.data, self.log = cfg, settings, data, log
        self.out_dir = Path(out_dir)
        self.resume = bool(resume)
        self.cache = StepCache() if cache is None else cache
        self.mesh = make_mesh()
        self.run_tag: str | None = None
        self._lf: dict[int, FitResult] = {}
        self.callbacks: list[Callback] = []  # extra callbacks of every stage (tests, monitoring)

    # ---- models ---------------------------------------------------------------------------------
    def spec(self, fidelities: Sequence[str], mode: str = "conditioning") -> ModelSpec:
        """The shared architecture with ``fidelities`` in ``mode`` (conditioning | heads)."""
        config = replace(self.cfg.model, fidelity_mode=mode)
        return ModelSpec(config, tuple(self.data.species), tuple(fidelities), self.data.avg_num_neighbors)

    def e0(self, structures: Sequence[Structure], fidelities: Sequence[str], prior: np.ndarray | None = None) -> np.ndarray:
        """E0 [F, S] fitted per fidelity on ``structures`` (ridge with ``train.e0_alpha``, SPEC §3),
        shrunk towards ``prior`` [S] (e.g. the LF model's E0) instead of zero (``fit_e0``)."""
        return fit_e0(structures, self.data.species, tuple(fidelities), alpha=self.cfg.train.e0_alpha, prior=prior)

    def new_fidelity_e0(self, base: Model, structures: Sequence[Structure], fidelity: str) -> np.ndarray:
        """[S] E0 of a fidelity added to ``base`` (transfer, append), fitted on ``structures`` and shrunk
        towards ``base``'s first-fidelity E0: with fewer frames than elements the fit is underdetermined."""
        prior = np.asarray(base.variables["constants"]["e0"], np.float64).reshape(len(base.fidelities), -1)[0]
        return self.e0(structures, (fidelity,), prior=prior)[0]

    def fresh(self, spec: ModelSpec, train: Sequence[Structure], seed: int) -> Model:
        """A new model with E0 and scale (force RMS) fitted on ``train``."""
        example = example_graph(self.data.hf_pool[0], spec)
        return Model(spec, spec.init(seed, example, e0=self.e0(train, spec.fidelities), scale=force_rms(train)))

    def fidelity_weights(self, train: Sequence[Structure], fidelities: Sequence[str]) -> dict[str, float]:
        """Per-fidelity weights of a run that mixes ``fidelities`` on ``train``: derived from
        ``train.loss.fidelity_share`` and the frame counts of ``train`` (logged), else
        ``train.loss.fidelity_weights``."""
        weights, how = resolve_fidelity_weights(self.cfg.train.loss, tuple(fidelities), train)
        if self.cfg.train.loss.fidelity_share:
            self.log(f"  {how}")
        return weights

    def stage_fit(self, kind: str, model: Model, train: Sequence[Structure], valid: Sequence[Structure], *,
                  seed: int, select: str, stage: str, **kwargs) -> FitResult:
        """``fit`` with the steps and learning-rate schedule of budget stage ``kind`` ("scratch",
        "pretrain", "continue", "delta"; ``settings.Budget.stage``)."""
        steps, schedule = self.settings.budget.stage(kind)
        return self.fit(model, train, valid, steps=steps, schedule=schedule, seed=seed, select=select, stage=stage,
                        **kwargs)

    # ---- training and evaluation ------------------------------------------------------------------
    def stage_dir(self, stage: str, seed: int) -> Path:
        return self.out_dir / "stages" / (self.run_tag or f"run_s{seed}") / stage

    def eval_every(self, steps: int) -> int:
        """``train.eval_every_steps``, else a tenth of the stage."""
        every = self.cfg.train.eval_every_steps
        return int(every) if every is not None else max(1, int(steps) // 10)

    def fit(self, model: Model, train: Sequence[Structure], valid: Sequence[Structure], *, steps: int, seed: int,
            select: str, stage: str, fidelity_weights: Mapping[str, float] | None = None,
            trainable: Sequence[str] | None = None, schedule: tuple[int, int] | None = None) -> FitResult:
        """One stage: ``fit`` for ``steps`` steps with ``train.*``, the ablation's budget and compiled
        steps, best weights on ``select``'s validation metric, checkpoints in ``stage_dir(stage)``.

        fidelity_weights: per-fidelity structure weights (1 where not given; names the model does
        not have are ignored); trainable: top-level param groups that train (None = all); schedule:
        (start, total) of the learning-rate decay (default: over this stage's steps).
        """
        weights = {k: v for k, v in (fidelity_weights or {}).items() if k in model.fidelities}
        directory = self.stage_dir(stage, seed)
        label = f"{self.run_tag or 'run'}/{stage}"
        result = fit(model, train, valid, self.cfg.train, budget=self.data.budget, steps=steps, seed=seed,
                     select=select, fidelity_weights=weights, trainable=trainable, eval_every_steps=self.eval_every(steps),
                     schedule=schedule,
                     checkpoint_dir=directory, checkpoint_epochs=False, resume=self.resume,
                     compute_stress=self.data.compute_stress, cache=self.cache, mesh=self.mesh,
                     callbacks=[_StageLog(label, select, self.cfg.train.best_metric, self.log), *self.callbacks],
                     log=self.log)
        if result.interrupted:
            raise StageInterrupted(f"{label} interrupted at step {result.steps}: continue with mfjax ablate --resume")
        return result

    def evaluate(self, model: Model, structures: Sequence[Structure]) -> dict:
        """{fidelity: metrics} of ``model`` on ``structures`` (the ablation's budget and steps)."""
        return evaluate(model, structures, budget=self.data.budget, cache=self.cache, mesh=self.mesh)

    def predict(self, model: Model, structures: Sequence[Structure]) -> list[dict]:
        """Per-structure predictions (``predict_structures``) at each structure's fidelity."""
        return predict_structures(model, structures, budget=self.data.budget, cache=self.cache, mesh=self.mesh)

    # ---- the shared LF model -----------------------------------------------------------------------
    def lf_model(self, seed: int) -> FitResult:
        """The LF-only model of ``seed`` (all LF training data, ``budget.pretrain_steps``), trained once
        (restored from its finished checkpoint on --resume)."""
        if seed not in self._lf:
            d = self.data
            self.log(f"pre-training the low-fidelity model ({d.low}, {len(d.lf_train)} structures, seed {seed})")
            model = self.fresh(self.spec((d.low,)), d.lf_train, seed)
            tag, self.run_tag = self.run_tag, f"lf_model_s{seed}"
            try:
                self._lf[seed] = self.stage_fit("pretrain", model, d.lf_train, d.lf_valid, seed=seed, select=d.low,
                                                stage="pretrain")
            finally:
                self.run_tag = tag
        return self._lf[seed]

    def has_lf_model(self, seed: int) -> bool:
        return seed in self._lf
