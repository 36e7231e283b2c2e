"""What strategies share: the ablation ``Context`` (config, data, trainer, the cached LF model) and
the ``Outcome`` a strategy returns.

A strategy is a function ``run(ctx, hf_train, seed) -> Outcome``; ``hf_train`` is the HF training
subset of this (fraction, seed), identical for every strategy. The LF model (trained on all LF
training data) is the starting point of transfer, delta and append, and is trained once per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from mfjax.config import Config
from mfjax.data.statistics import fit_e0, force_rms
from mfjax.data.structures import Structure
from mfjax.strategies.data import AblationData
from mfjax.strategies.settings import AblationSettings
from mfjax.strategies.trainer import Fitted, Model, ModelSpec, Trainer, init_model
from mfjax.training.batches import cast_floats

__all__ = ["Outcome", "Context"]


@dataclass
class Outcome:
    """A trained strategy: the HF potential (``Model`` or ``DeltaPair``), its training stages, notes
    for the results table, and whether the model also predicts the low fidelity (``low``)."""

    model: Any
    stages: list[Fitted]
    notes: dict[str, Any] = field(default_factory=dict)
    low: str | None = None

    @property
    def seconds(self) -> float:
        return float(sum(f.seconds for f in self.stages))

    @property
    def steps(self) -> int:
        return int(sum(f.steps for f in self.stages))


class Context:
    """Config, data and trainer of one ablation, plus the per-seed LF model cache."""

    def __init__(self, cfg: Config, settings: AblationSettings, data: AblationData, out_dir: str | Path,
                 log: Callable[[str], None] = print):
        self.cfg, self.settings, self.data, self.log = cfg, settings, data, log
        self.out_dir = Path(out_dir)
        self.trainer = Trainer(cfg, data.budget, data.compute_stress, eval_every=settings.eval_every, log=log)
        self._lf: dict[int, Fitted] = {}
        example = self.trainer.batcher(data.hf_pool[:1], (data.high,)).batch([0])
        self.example = jax.tree.map(np.asarray, cast_floats(example))

    # ---- models ---------------------------------------------------------------------------------
    def spec(self, fidelities: Sequence[str], mode: str = "conditioning") -> ModelSpec:
        """The shared architecture with ``fidelities`` in ``mode`` (conditioning | heads)."""
        config = replace(self.cfg.model, fidelity_mode=mode)
        return ModelSpec(config, tuple(self.data.species), tuple(fidelities), self.data.avg_num_neighbors)

    def e0(self, structures: Sequence[Structure], fidelities: Sequence[str]) -> np.ndarray:
        """E0 [F, S] fitted per fidelity on ``structures`` (ridge with ``ablation.e0_alpha``, SPEC §3)."""
        return fit_e0(structures, self.data.species, tuple(fidelities), alpha=self.settings.e0_alpha)

    def fresh(self, spec: ModelSpec, train: Sequence[Structure], seed: int) -> Model:
        """A new model with E0 and scale (force RMS) fitted on ``train``."""
        return init_model(spec, seed, self.example, self.e0(train, spec.fidelities), force_rms(train))

    def fidelity_weights(self) -> dict[str, float]:
        """``train.loss.fidelity_weights`` for runs that mix fidelities."""
        return dict(self.cfg.train.loss.fidelity_weights)

    def lf_model(self, seed: int) -> Fitted:
        """The LF-only model of ``seed`` (all LF training data, ``steps.pretrain``), trained once."""
        if seed not in self._lf:
            d = self.data
            self.log(f"pre-training the low-fidelity model ({d.low}, {len(d.lf_train)} structures, seed {seed})")
            model = self.fresh(self.spec((d.low,)), d.lf_train, seed)
            self._lf[seed] = self.trainer.fit(
                model, d.lf_train, d.lf_valid, steps=self.settings.steps.pretrain, seed=seed, select=d.low,
                label=f"lf_model s{seed}",
            )
        return self._lf[seed]

    def has_lf_model(self, seed: int) -> bool:
        return seed in self._lf
