"""The ``ablation:`` section of an experiment config, and loading a config that has one.

An ablation config is an ordinary mfjax config (``data``, ``model``, ``train``, ``output``) plus::

    ablation:
      low: pbe                  # fidelity names (null = first / second fidelity found)
      high: r2scan
      strategies: [hf_only, transfer, delta, multi_fidelity, multi_fidelity_heads, append]
      hf_fractions: [0.01, 0.03, 0.1, 0.3, 1.0]
      seeds: 3
      regions:                  # HF test regions next to the covered test split (never trained on)
        uncovered_temperature: {key: region, value: uncovered}
        composition_gap: {key: region, value: gap}
      bootstrap: {samples: 2000, seed: 0}   # paired 95 % intervals (mfjax.strategies.stats)
      budget: {total_steps: 1400, pretrain_steps: 1000, schedule: continued}
      transfer_freeze: none     # or backbone
      delta_labels: auto        # paired | predicted | auto
      quick: ["ablation.hf_fractions=[0.1,1.0]", ...]   # overrides applied by --quick

Every strategy of one (fraction, seed) sees the same HF training subset, the same validation and
test sets, the same model size and the same seed. Every stage is one ``mfjax.training.fit.fit``
with the ``train:`` section: optimiser, weight decay, schedule and warm-up, clipping, EMA, batch,
loss, ``e0_alpha``, ``best_metric``, ``eval_every_steps`` (null = a tenth of the stage),
``checkpoint_every_steps``, ``max_nonfinite_steps``, ``compute_stress``, ``distributed``; the
seeds are ``train.seed``, ``train.seed + 1``, ... ``train.patience`` stops every stage early
(validations without a new best on the stage's validation fidelity; the best weights are kept);
``train.keep: last`` instead keeps every stage's final weights (the whole budget, no selection on
validation frames: the equal-budget comparison when the HF validation set is too small to select on);
``train.loss.fidelity_share`` (or ``fidelity_weights``) weights the fidelities of the joint stages.

Budgets (``ablation.budget``) follow one rule: **every strategy gets the same total number of
optimiser steps**, ``total_steps``, counting the shared LF pre-training (``pretrain_steps``) of
transfer, delta and append: hf_only, multi_fidelity and multi_fidelity_heads train ``total_steps``
from scratch; transfer's fine-tuning, the Δ model and append's joint stage train
``total_steps - pretrain_steps`` after it. With ``train.patience`` these are caps and every stage
stops on the same convergence criterion. ``budget.schedule`` names the learning-rate variant:
``continued`` (default): one decay from ``train.lr`` to ``train.lr_final`` over ``total_steps`` per
strategy: the LF pre-training runs its first ``pretrain_steps`` and transfer / append continue it
where the pre-training's cap ends (so from-scratch and pre-trained strategies get one decay cycle
each; the fresh Δ model decays over its own stage); ``per_stage``: every stage decays over its own
budget (two cycles for transfer and append, the classic fine-tuning recipe). Budgets are in
optimiser steps (not epochs) so that the cost of a table is known in advance: ``train.epochs``,
``train.eval_every`` (epochs) and ``train.best_fidelity`` (an ablation selects on its high
fidelity) are rejected. The old ``ablation.steps`` is a one-line error naming ``ablation.budget``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mfjax.config import Config, load_config
from mfjax.utils.configtools import ConfigError, apply_overrides, from_dict, option, read_yaml

__all__ = ["STRATEGIES", "Budget", "Region", "Bootstrap", "AblationSettings", "load_ablation_config", "DEFAULT_QUICK"]

#: Every strategy name, in the order of the tables.
STRATEGIES = ("hf_only", "transfer", "delta", "multi_fidelity", "multi_fidelity_heads", "append")

#: Overrides applied by ``--quick`` when the config gives none: tiny budgets, two fractions.
DEFAULT_QUICK = (
    "ablation.hf_fractions=[0.3,1.0]",
    "ablation.seeds=2",
    "ablation.budget.total_steps=60",
    "ablation.budget.pretrain_steps=40",
    "train.eval_every_steps=30",
)

#: ``train`` keys without meaning in an ablation -> why.
TRAIN_KEYS_REJECTED = {
    "epochs": "stage budgets are optimiser steps: ablation.budget.{total_steps,pretrain_steps}",
    "eval_every": "it counts epochs; use train.eval_every_steps",
    "best_fidelity": "every stage selects on its own fidelity (the LF model on ablation.low, the rest on ablation.high)",
}

#: Removed ``ablation`` keys -> the key that replaces them.
ABLATION_KEYS_MOVED = {"e0_alpha": "train.e0_alpha", "eval_every": "train.eval_every_steps", "seed_offset": "train.seed"}


@dataclass(frozen=True)
class Budget:
    """Equal budgets: every strategy gets ``total_steps`` optimiser steps in all (caps when
    ``train.patience`` stops stages early)."""

    total_steps: int = option(1400, "Optimiser steps of every strategy in all: hf_only, multi_fidelity and "
                              "multi_fidelity_heads from scratch; transfer, delta and append = pretrain_steps + the rest.")
    pretrain_steps: int = option(1000, "Of total_steps, the LF-only pre-training shared by transfer, delta and append "
                                 "(trained once per seed); their second stage gets total_steps - pretrain_steps.")
    schedule: Literal["continued", "per_stage"] = option(
        "continued", "Learning-rate decay: continued = one decay over total_steps per strategy (the second stage of "
        "transfer / append continues the pre-training's schedule); per_stage = each stage decays over its own steps."
    )

    def validate(self, where: str = "ablation.budget") -> None:
        if self.pretrain_steps < 1 or self.total_steps <= self.pretrain_steps:
            raise ConfigError(f"{where}: need 1 <= pretrain_steps < total_steps, got pretrain_steps "
                              f"{self.pretrain_steps}, total_steps {self.total_steps}")

    def stage(self, name: str) -> tuple[int, tuple[int, int]]:
        """(steps, (schedule start, schedule total)) of stage ``name``: "scratch" (hf_only,
        multi_fidelity), "pretrain", "continue" (transfer, append) or "delta" (a fresh Δ model)."""
        rest = self.total_steps - self.pretrain_steps
        continued = self.schedule == "continued"
        stages = {"scratch": (self.total_steps, (0, self.total_steps)),
                  "pretrain": (self.pretrain_steps, (0, self.total_steps) if continued else (0, self.pretrain_steps)),
                  "continue": (rest, (self.pretrain_steps, self.total_steps) if continued else (0, rest)),
                  "delta": (rest, (0, rest))}
        return stages[name]


@dataclass(frozen=True)
class Region:
    """A named HF test region: the frames with ``info[key] == value``."""

    value: str = option(doc="HF frames with info[key] == value (from any split) form this test region.")
    key: str = option("region", "atoms.info key of the frame's region.")


@dataclass(frozen=True)
class Bootstrap:
    """The hierarchical bootstrap of the paired comparisons (seeds, then test structures)."""

    samples: int = option(2000, "Bootstrap replicates of each 95 % interval.")
    seed: int = option(0, "Seed of the bootstrap's random numbers (the intervals are reproducible).")


#: The one region of configs written before named regions (the old uncovered_key/value defaults).
DEFAULT_REGIONS = {"uncovered": Region(value="uncovered", key="region")}


@dataclass(frozen=True)
class AblationSettings:
    """What ``mfjax ablate`` compares and with which budgets."""

    low: str | None = option(None, "Low-fidelity name (null = the first fidelity of the data).")
    high: str | None = option(None, "High-fidelity name (null = the second fidelity of the data).")
    strategies: tuple[str, ...] = option(STRATEGIES, f"Strategies to run, from {list(STRATEGIES)}.")
    hf_fractions: tuple[float, ...] = option((0.01, 0.03, 0.1, 0.3, 1.0), "Fractions of the HF training set.")
    seeds: int = option(3, "Number of seeds (subset draw + initialisation); >= 2 for the paired intervals.")
    min_hf_train: int = option(1, "At least this many HF training structures at any fraction.")
    budget: Budget = option(doc="Equal optimiser-step budgets (every strategy the same total).", factory=Budget)
    transfer_freeze: Literal["none", "backbone"] = option(
        "none", "Transfer fine-tuning: train all weights, or freeze everything but the readout."
    )
    delta_labels: Literal["auto", "paired", "predicted"] = option(
        "auto",
        "LF labels of the HF structures for Δ-learning: paired frames (same structure_id), the LF model's "
        "predictions, or auto (paired where available, predictions for the rest).",
    )
    regions: dict[str, Region] = option(
        doc="Named HF test regions {name: {key, value}}: HF frames of any region are never trained on, and each "
        "region is its own test set next to the covered HF test split ('test').",
        factory=lambda: dict(DEFAULT_REGIONS),
    )
    bootstrap: Bootstrap = option(doc="Paired bootstrap intervals in results.md / summary.json.", factory=Bootstrap)
    export: bool = option(True, "Export every trained model (RUN/runs/<name>/model) for evaluate / MD.")
    quick: tuple[str, ...] = option(DEFAULT_QUICK, "key=value overrides applied by --quick (CI-sized run).")

    def validate(self, where: str = "ablation") -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"{where}.strategies: unknown {unknown}; choose from {list(STRATEGIES)}")
        if not self.hf_fractions or any(not 0.0 < f <= 1.0 for f in self.hf_fractions):
            raise ConfigError(f"{where}.hf_fractions must be in (0, 1], got {list(self.hf_fractions)}")
        if self.seeds < 1 or self.min_hf_train < 1:
            raise ConfigError(f"{where}: seeds and min_hf_train must be >= 1")
        for name in self.regions:
            if name == "test" or not name.replace("_", "").isalnum():
                raise ConfigError(f"{where}.regions.{name}: region names are letters, digits and _ ('test' is the "
                                  "covered HF test split)")
        if self.bootstrap.samples < 100:
            raise ConfigError(f"{where}.bootstrap.samples must be >= 100, got {self.bootstrap.samples}")


def load_ablation_config(
    path: str | Path | None, overrides: list[str] | None = None, *, quick: bool = False, data: dict | None = None
) -> tuple[Config, AblationSettings]:
    """(base config, ablation settings) from a YAML file (or ``data``) with ``--set`` overrides.

    ``quick`` applies the ``ablation.quick`` overrides before the explicit ones.
    """
    if data is None:
        if path is None or not Path(path).exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = read_yaml(path)
    raw = copy.deepcopy(data)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if quick:
        section = raw.get("ablation") or {}
        apply_overrides(raw, list(section.get("quick", DEFAULT_QUICK)))
    apply_overrides(raw, list(overrides or []))
    section = _old_region_keys(raw.pop("ablation", None) or {})
    _reject_shadowing(raw, section)
    settings = from_dict(AblationSettings, section, "ablation")
    cfg = load_config(path, data=raw)
    return cfg, settings


def _reject_shadowing(raw: dict, section) -> None:
    """ConfigError for ``train`` keys an ablation cannot honour and for removed ``ablation`` keys."""
    train = raw.get("train") or {}
    if isinstance(train, dict):
        for key, why in TRAIN_KEYS_REJECTED.items():
            if key in train:
                raise ConfigError(f"train.{key} is not used by mfjax ablate ({why}); remove it from the ablation config")
    if isinstance(section, dict):
        for key, new in ABLATION_KEYS_MOVED.items():
            if key in section:
                raise ConfigError(f"ablation.{key} was removed: use {new} (one key for mfjax train and mfjax ablate)")
        if "steps" in section:
            raise ConfigError("ablation.steps was replaced by ablation.budget: {total_steps, pretrain_steps} (every "
                              "strategy gets the same total; old joint -> total_steps, pretrain -> pretrain_steps)")


def _old_region_keys(section):
    """``ablation.uncovered_key/value`` (before named regions) -> ``regions: {uncovered: {key, value}}``."""
    if not isinstance(section, dict) or not {"uncovered_key", "uncovered_value"} & set(section):
        return section
    if "regions" in section:
        raise ConfigError("ablation.uncovered_key/uncovered_value and ablation.regions: give only ablation.regions")
    section = dict(section)
    region = {"key": section.pop("uncovered_key", "region"), "value": section.pop("uncovered_value", "uncovered")}
    return {**section, "regions": {"uncovered": region}}
