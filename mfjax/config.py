"""The experiment config: typed dataclasses loaded from YAML, strict keys, ``--set`` overrides.

Shape (``mfjax template`` prints every key with its documentation)::

    data:   {cutoff, datasets: [{path, fidelity, weight: {energy, forces, stress}}], split}
    model:  {preset or sizes, fidelity_mode: conditioning|heads}
    train:  {epochs, lr, schedule, batch budget, seed, ema, loss}
    output: {dir}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml

from mfjax.nn.config import ModelConfig
from mfjax.nn.presets import preset_path
from mfjax.utils.configtools import ConfigError, apply_overrides, from_dict, option, read_yaml, template, to_dict

__all__ = [
    "Config", "DataConfig", "DatasetConfig", "LabelKeys", "LabelWeights", "SplitConfig",
    "TrainConfig", "LossConfig", "BatchConfig", "OutputConfig", "ModelConfig", "ConfigError",
    "load_config", "config_template",
]


@dataclass(frozen=True)
class LabelWeights:
    """Loss weights of one dataset's labels (multiply the global loss weights)."""

    energy: float = option(1.0, "Weight of this dataset's energy loss.")
    forces: float = option(1.0, "Weight of this dataset's force loss.")
    stress: float = option(1.0, "Weight of this dataset's stress loss.")


@dataclass(frozen=True)
class LabelKeys:
    """Where labels live in each frame (ASE calculator results are tried first)."""

    energy: str = option("energy", "atoms.info key of the total energy (eV).")
    forces: str = option("forces", "atoms.arrays key of the forces (eV/Å).")
    stress: str = option("stress", "atoms.info key of the stress (eV/Å^3, ASE sign; Voigt-6 or 3x3).")
    fidelity: str = option("fidelity", "atoms.info key naming the fidelity of a frame.")


@dataclass(frozen=True)
class DatasetConfig:
    """One data file (extxyz, ASE db or anything ase.io reads)."""

    path: str = option(doc="Path to the file; relative paths are relative to the config file.")
    fidelity: str | None = option(None, "Fidelity of every frame; null = read atoms.info[keys.fidelity] per frame.")
    weight: LabelWeights = option(doc="Per-label loss weights of this dataset.", factory=LabelWeights)
    keys: LabelKeys = option(doc="Label key names.", factory=LabelKeys)
    index: str = option(":", "ase.io.read index (e.g. ':', '0:100', '::2').")
    format: str | None = option(None, "ase.io format (null = guess from the file name).")
    role: Literal["train", "valid", "test"] | None = option(
        None, "Use the whole file as one split instead of splitting it (null = split by data.split)."
    )


@dataclass(frozen=True)
class SplitConfig:
    """Random train/valid/test split of every dataset without a role (same seed -> same split)."""

    valid: float = option(0.1, "Fraction of structures for validation.")
    test: float = option(0.1, "Fraction of structures for the test set.")
    seed: int = option(0, "Seed of the split permutation.")


@dataclass(frozen=True)
class DataConfig:
    cutoff: float = option(5.0, "Neighbour-list and model cutoff r_c, Å.")
    datasets: tuple[DatasetConfig, ...] = option(doc="The data files, one or more per fidelity.", factory=tuple)
    split: SplitConfig = option(doc="How datasets are split.", factory=SplitConfig)
    fidelities: tuple[str, ...] | None = option(
        None, "Fidelity names in index order, e.g. [pbe, r2scan] (null = the order first seen in the files, "
        "printed at the start of a run). Stored in exported models; names are matched exactly."
    )

    def validate(self, where: str = "data") -> None:
        if self.cutoff <= 0:
            raise ConfigError(f"{where}.cutoff must be > 0, got {self.cutoff}")
        if self.split.valid < 0 or self.split.test < 0 or self.split.valid + self.split.test >= 1:
            raise ConfigError(f"{where}.split: valid + test must be in [0, 1), got {self.split}")


@dataclass(frozen=True)
class LossConfig:
    """SPEC §4: Huber (or MSE) on energy/atom, force components, stress in kbar."""

    kind: Literal["huber", "mse"] = option("huber", "Elementwise loss.")
    delta: float = option(0.01, "Huber delta.")
    energy_weight: float = option(1.0, "Weight of the energy-per-atom loss (eV/atom).")
    forces_weight: float = option(1.0, "Weight of the force-component loss (eV/Å).")
    stress_weight: float = option(0.01, "Weight of the stress-component loss (kbar).")
    fidelity_weights: dict[str, float] = option(
        doc="Per-fidelity structure weights, e.g. {r2scan: 7.0} to up-weight scarce high-fidelity data.",
        factory=dict,
    )
    fidelity_share: dict[str, float] = option(
        doc="Share of the loss per fidelity instead of a weight, e.g. {r2scan: 0.4}: weights are derived from the "
        "training frame counts (w_f = share_f * N / n_f; fidelities not named share the rest in proportion to their "
        "frames) and printed, so the share holds whatever the HF:LF ratio. Excludes fidelity_weights.",
        factory=dict,
    )
    fidelity_weighting: Literal["weights", "repeats"] = option(
        "weights", "How per-fidelity weights (fidelity_share or fidelity_weights) enter training: weights = each "
        "structure's loss is multiplied by its fidelity's weight w (a rare HF frame of weight 200 makes its batch "
        "loud); repeats = a fidelity with w > 1 is repeated round(w) times per epoch with weight w / round(w) (the "
        "same expected share, HF frames in more batches, lower gradient variance; epochs get longer)."
    )
    fidelity_l2: float = option(
        1.0e-6,
        "L2 penalty fidelity_l2 * sum w^2 on the fidelity-specific weights (the one-hot rows of the conditioned "
        "linears and of the node embedding, the readout heads in heads mode), added to the loss; 0 = off. The "
        "default 1e-6 is the multi-fidelity recipe measured best in experiments/recipes (HF force MAE -11, -27, -63 "
        "meV/A against plain conditioning in the covered, hot and compositional-gap test regions); with one "
        "fidelity the rows are constant inputs and get the same small penalty.",
    )

    def validate(self, where: str = "train.loss") -> None:
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if self.delta <= 0:
            raise ConfigError(f"{where}.delta must be > 0, got {self.delta}")
        if self.fidelity_l2 < 0:
            raise ConfigError(f"{where}.fidelity_l2 must be >= 0 (0 = off), got {self.fidelity_l2}")
        for fid, w in self.fidelity_weights.items():
            if w < 0:
                raise ConfigError(f"{where}.fidelity_weights.{fid} must be >= 0, got {w}")
        if self.fidelity_weights and self.fidelity_share:
            raise ConfigError(f"{where}: give fidelity_weights or fidelity_share, not both "
                              f"(the share derives the weights from the data sizes)")
        for fid, share in self.fidelity_share.items():
            if not 0.0 < share <= 1.0:
                raise ConfigError(f"{where}.fidelity_share.{fid} must be in (0, 1], got {share}")
        if sum(self.fidelity_share.values()) > 1.0 + 1e-6:
            raise ConfigError(f"{where}.fidelity_share: the shares sum to {sum(self.fidelity_share.values()):g} > 1")


@dataclass(frozen=True)
class BatchConfig:
    """Batch budget; node/edge budgets are derived from the data when null."""

    max_graphs: int = option(16, "Real structures per batch (per device), at most.")
    max_nodes: int | None = option(None, "Atoms per batch incl. padding (null = derived from data).")
    max_edges: int | None = option(None, "Edges per batch incl. padding (null = derived from data).")

    def validate(self, where: str = "train.batch") -> None:
        if self.max_graphs < 1:
            raise ConfigError(f"{where}.max_graphs must be >= 1, got {self.max_graphs}")
        for name in ("max_nodes", "max_edges"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{name} must be >= 1 or null (derived from the data), got {value}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(100, "Number of passes over the training data.")
    lr: float = option(0.01, "Peak learning rate.")
    lr_final: float = option(1e-4, "Final learning rate of the decay.")
    schedule: Literal["linear", "cosine", "constant"] = option("linear", "Learning-rate decay after warm-up.")
    warmup_steps: int = option(0, "Linear warm-up steps.")
    optimizer: Literal["adam", "adamw"] = option("adam", "optax optimiser.")
    weight_decay: float = option(0.0, "AdamW weight decay (only with optimizer: adamw).")
    grad_clip: float | None = option(None, "Clip the global gradient norm to this value (null = off).")
    ema: float | None = option(None, "EMA decay of the weights used for evaluation (e.g. 0.999; null = off).")
    seed: int = option(0, "Seed of initialisation and data shuffling.")
    batch: BatchConfig = option(doc="Batch budget.", factory=BatchConfig)
    loss: LossConfig = option(doc="Loss function.", factory=LossConfig)
    eval_every: int = option(1, "mfjax train: validate every this many epochs (and after the last one).")
    eval_every_steps: int | None = option(
        None, "Also validate every this many optimiser steps (null = mfjax train: only per eval_every epochs; "
        "mfjax ablate: a tenth of each stage's steps)."
    )
    best_metric: str = option(
        "forces_rmse_ev_a",
        "Validation metric (lower is better) of best_fidelity that selects the best checkpoint.",
    )
    best_fidelity: str | None = option(
        None, "mfjax train: fidelity whose best_metric selects the best checkpoint (null = the fidelity with the "
        "fewest training frames, printed at the start). mfjax ablate selects on its high fidelity."
    )
    patience: int | None = option(
        None, "Early stopping: stop after this many validations in a row without a new best (the best weights are "
        "kept; null = off). Counts validations, so it depends on eval_every / eval_every_steps."
    )
    keep: Literal["best", "last"] = option(
        "best", "Weights a run ends with: best = those of the best validation (best_metric); last = the final "
        "ones (validation still runs and is logged, nothing is selected on it: for comparisons at equal budgets, or "
        "when the validation set is too small to select on)."
    )
    max_nonfinite_steps: int = option(10, "Stop after this many non-finite losses in a row (such steps are skipped).")
    checkpoint_every_steps: int = option(100, "Also save the 'last' checkpoint every this many steps (0 = only at epoch ends; "
                                        "in mfjax ablate at the end of each stage).")
    compute_stress: bool | None = option(None, "Predict stress during training (null = when any training frame has a stress label).")
    e0_alpha: float = option(
        0.1,
        "Ridge alpha of the per-fidelity E0 fit (SPEC: 0.1). With few distinct compositions and large total "
        "energies (molecules with all-electron DFT) the shrinkage biases E0 by 0.1-1 eV/atom: use e.g. 1.0e-6.",
    )
    distributed: bool | None = option(
        None, "Multi-host: call jax.distributed.initialize() (null = when JAX_COORDINATOR_ADDRESS is set)."
    )
    ensemble: int | None = option(
        None, "Train an ensemble of this many models in one vectorised run (member k initialised with seed + k; "
        "one exported bundle whose predictions carry energy_std / forces_std for mfjax select and md; null = one model)."
    )

    def validate(self, where: str = "train") -> None:
        if self.e0_alpha < 0:
            raise ConfigError(f"{where}.e0_alpha must be >= 0, got {self.e0_alpha}")
        if self.epochs < 1:
            raise ConfigError(f"{where}.epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0 or self.lr_final < 0:
            raise ConfigError(f"{where}.lr must be > 0 and lr_final >= 0, got {self.lr}, {self.lr_final}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ConfigError(f"{where}.ema must be in (0, 1) or null, got {self.ema}")
        if self.eval_every < 1 or self.max_nonfinite_steps < 1 or self.checkpoint_every_steps < 0:
            raise ConfigError(f"{where}: eval_every and max_nonfinite_steps must be >= 1, checkpoint_every_steps >= 0")
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise ConfigError(f"{where}.eval_every_steps must be >= 1 or null, got {self.eval_every_steps}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"{where}.patience must be >= 1 or null (off), got {self.patience}")
        if self.patience is not None and self.keep == "last":
            raise ConfigError(f"{where}.patience stops on the best validation, which {where}.keep: last ignores: "
                              f"set patience: null or keep: best")
        if self.warmup_steps < 0:
            raise ConfigError(f"{where}.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0 or (self.weight_decay and self.optimizer != "adamw"):
            raise ConfigError(f"{where}.weight_decay = {self.weight_decay} needs optimizer: adamw "
                              f"(Adam has no decoupled weight decay) and a value >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{where}.grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.ensemble is not None and self.ensemble < 1:
            raise ConfigError(f"{where}.ensemble must be >= 1 or null, got {self.ensemble}")
        metrics = ("energy_mae_mev_atom", "energy_rmse_mev_atom", "forces_mae_ev_a", "forces_rmse_ev_a", "stress_mae_gpa")
        if self.best_metric not in metrics:
            import difflib

            hint = difflib.get_close_matches(self.best_metric, metrics, n=1)
            raise ConfigError(
                f"{where}.best_metric {self.best_metric!r} is not a validation metric"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; choose from {list(metrics)}")
            )


@dataclass(frozen=True)
class OutputConfig:
    dir: str = option("runs/default", "Run directory (checkpoints, metrics.csv, plots, exported model).")
    plots: bool = option(True, "Write parity plots (PNG) of the test set per fidelity.")
    progress: bool = option(True, "Show a progress bar (tqdm) during training.")


@dataclass(frozen=True)
class Config:
    data: DataConfig = option(doc="Data files, cutoff and split.", factory=DataConfig)
    model: ModelConfig = option(doc="Model architecture.", factory=ModelConfig)
    train: TrainConfig = option(doc="Optimisation.", factory=TrainConfig)
    output: OutputConfig = option(doc="Where results go.", factory=OutputConfig)

    def validate(self, where: str = "") -> None:
        if not self.data.datasets:
            raise ConfigError("data.datasets is empty: give at least one data file")


def _preset_dict(name: str) -> dict:
    return read_yaml(preset_path(name))


def resolve_model(model: dict) -> dict:
    """Merge a ``preset`` with explicitly given model keys (explicit keys win)."""
    if model.get("preset"):
        merged = _preset_dict(model["preset"])
        merged.update(model)
        return merged
    return model


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None) -> Config:
    """Load, override and validate a config. Relative dataset paths become relative to the file."""
    raw: dict = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if data is None:  # every YAML, I/O and top-level problem is one ConfigError line
            raw = read_yaml(path)
        base = path.resolve().parent
    if data is not None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: the top level must be a mapping, got a {type(data).__name__}")
        raw = copy.deepcopy(data)
    apply_overrides(raw, list(overrides or []))
    for section in ("data", "model", "train", "output"):
        if section in raw and raw[section] is None:  # an empty section: its defaults
            raw[section] = {}
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"{section}: expected a mapping of keys, got {raw[section]!r}")
    raw.setdefault("model", {})
    raw["model"] = resolve_model(raw["model"])
    if "data" in raw and "cutoff" in raw["data"]:
        raw["model"]["cutoff"] = raw["data"]["cutoff"]
    cfg = from_dict(Config, raw)
    datasets = tuple(
        replace(d, path=str((base / d.path).resolve()) if not Path(d.path).is_absolute() else d.path)
        for d in cfg.data.datasets
    )
    return replace(cfg, data=replace(cfg.data, datasets=datasets), model=replace(cfg.model, cutoff=cfg.data.cutoff))


def save_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w") as handle:
        yaml.safe_dump(to_dict(cfg), handle, sort_keys=False)


def config_template() -> str:
    """A complete commented config (printed by ``mfjax template``)."""
    return "# mfjax config: every key with its default.\n" + template(Config) + "\n"
