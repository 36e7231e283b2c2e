"""A step-budgeted trainer for ablations that compiles each kind of model once.

An ablation trains dozens of small models; on a CPU, compiling a train step costs far more than
running a few hundred of them. ``Trainer`` therefore keeps one jitted train step per *kind* of run
(model architecture, number of fidelities, mean neighbour count, loss weights, frozen or not) and
one jitted evaluation step per kind of model, and gives every run the same batch budget. Nothing
run-specific is baked into the compiled code: the learning-rate schedule lives in the optimiser
state (:func:`linear_lr`), E0 and the scale in the model's constants, so every run of a kind reuses
the compiled step.

It is built from the pieces of ``mfjax.training`` (loss, steps, state, EMA, evaluation, metrics);
unlike ``mfjax.training.loop.train`` it writes no checkpoints: an ablation resumes per run
(``results.csv``), not per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mfjax.config import Config
from mfjax.data.batching import BatchBudget, GraphBatcher
from mfjax.data.structures import Structure
from mfjax.nn.config import ModelConfig
from mfjax.training import loss as loss_lib
from mfjax.training.batches import iterate_steps
from mfjax.training.evaluation import evaluate_batcher
from mfjax.training.state import create_state
from mfjax.training.step import make_eval_step, make_predict_fn, make_train_step

__all__ = ["ModelSpec", "Model", "Fitted", "Trainer", "linear_lr", "init_model", "with_fidelities", "export_potential"]


@dataclass(frozen=True)
class ModelSpec:
    """What builds a ``Potential``: architecture, species, fidelity names, mean neighbour count."""

    config: ModelConfig
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    avg_num_neighbors: float

    @property
    def key(self) -> Hashable:
        """Everything that changes the computation (fidelity *names* do not)."""
        return (self.config, self.species, len(self.fidelities), self.avg_num_neighbors)

    def module(self):
        from mfjax.nn.model import Potential

        return Potential(self.config, self.species, self.fidelities, self.avg_num_neighbors)


@dataclass
class Model:
    """A potential in memory: its spec and host-side variables {"params", "constants"}."""

    spec: ModelSpec
    variables: dict

    @property
    def fidelities(self) -> tuple[str, ...]:
        return self.spec.fidelities

    @property
    def eval_key(self) -> Hashable:
        return ("potential", self.spec.key)

    def make_apply(self) -> Callable:
        return self.spec.module().apply


@dataclass
class Fitted:
    """Result of :meth:`Trainer.fit`: the best-validation model and how it was reached; ``seconds``
    is the wall time of the fit without compilation (first calls of new compiled steps)."""

    model: Model
    steps: int
    best_step: int
    best_value: float | None
    seconds: float
    history: list[dict] = field(default_factory=list)


class LinearLRState(NamedTuple):
    count: jax.Array  # [] int32 updates applied
    schedule: jax.Array  # [3] float32: (lr start, lr end, decay steps)


def linear_lr(lr: float, lr_final: float, total_steps: int) -> optax.GradientTransformation:
    """Scale updates by -lr(t), lr decaying linearly from ``lr`` to ``lr_final`` over ``total_steps``.

    The three numbers are stored in the *state* by ``init``; ``update`` reads only the state, so
    one jitted step built with one instance serves runs initialised by another.
    """

    def init(params) -> LinearLRState:
        del params
        return LinearLRState(jnp.zeros((), jnp.int32), jnp.asarray([lr, lr_final, max(total_steps, 1)], jnp.float32))

    def update(updates, state: LinearLRState, params=None):
        del params
        start, end, total = state.schedule[0], state.schedule[1], state.schedule[2]
        frac = jnp.minimum(state.count.astype(jnp.float32) / total, 1.0)
        rate = start + (end - start) * frac
        updates = jax.tree.map(lambda u: (-rate * u).astype(u.dtype), updates)
        return updates, LinearLRState(state.count + 1, state.schedule)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    """Optional global-norm clipping, Adam, then the linear schedule of ``train.lr -> train.lr_final``."""
    t = cfg.train
    parts = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip is not None else []
    lr_final = t.lr if t.schedule == "constant" else t.lr_final
    parts += [optax.scale_by_adam(), linear_lr(t.lr, lr_final, total_steps)]
    return optax.chain(*parts)


def init_model(spec: ModelSpec, seed: int, example, e0: Any, scale: float) -> Model:
    """Fresh variables of ``spec`` (``init_variables``) with the given E0 [F, S] and scale."""
    from mfjax.nn.model import init_variables

    variables = init_variables(spec.module(), jax.random.PRNGKey(seed), example, e0=e0, scale=scale)
    return Model(spec, jax.device_get(variables))


def _frozen_apply(apply: Callable, trainable: tuple[str, ...]) -> Callable:
    """``apply`` with the gradient of every top-level param group outside ``trainable`` stopped:
    Adam then leaves those weights exactly unchanged (zero gradient -> zero update)."""

    def frozen(variables, graph, vectors):
        params = {k: (v if k in trainable else jax.lax.stop_gradient(v)) for k, v in variables["params"].items()}
        return apply({**variables, "params": params}, graph, vectors)

    return frozen


class Trainer:
    """Fits and evaluates models of one ablation: shared budget, cutoff, loss and compile caches.

    cfg: the base config (``train.*`` and ``data.cutoff``); budget: the batch budget of every
    batch; compute_stress: predict stress in training (any stress label); eval_every: validation
    interval in steps; log: a print function.
    """

    def __init__(
        self, cfg: Config, budget: BatchBudget, compute_stress: bool, *, eval_every: int = 100,
        log: Callable[[str], None] = print,
    ):
        if cfg.train.optimizer != "adam":
            log(f"note: ablations use Adam; train.optimizer={cfg.train.optimizer!r} is ignored")
        self.cfg, self.budget, self.compute_stress, self.log = cfg, budget, bool(compute_stress), log
        self.eval_every = max(int(eval_every), 1)
        self.initial_state = None  # the state the last fit started from (tests: a fresh optimiser)
        self.settings = loss_lib.settings_from_config(cfg.train.loss)
        self._train_steps: dict[Hashable, Callable] = {}
        self._eval_steps: dict[Hashable, Callable] = {}
        self.compilations = 0
        self.compile_seconds = 0.0  # wall time of the first call of every compiled step

    # ---- compiled steps ----------------------------------------------------------------------
    def _train_step(self, model: Model, fw: np.ndarray, trainable: tuple[str, ...] | None, optimizer) -> Callable:
        key = (model.spec.key, tuple(np.asarray(fw).tolist()), trainable)
        if key not in self._train_steps:
            apply = model.make_apply()
            if trainable is not None:
                apply = _frozen_apply(apply, trainable)
            self._train_steps[key] = self._first_call_timed(make_train_step(
                make_predict_fn(apply, self.compute_stress), optimizer, self.settings, np.asarray(fw, np.float32),
                ema_decay=self.cfg.train.ema, donate=False,
            ))
        return self._train_steps[key]

    def _eval_step(self, model: Any) -> Callable:
        key = model.eval_key
        if key not in self._eval_steps:
            self._eval_steps[key] = self._first_call_timed(
                make_eval_step(make_predict_fn(model.make_apply(), self.compute_stress), len(model.fidelities))
            )
        return self._eval_steps[key]

    def _first_call_timed(self, fn: Callable) -> Callable:
        """``fn`` whose first call (trace + compile + run) is added to ``compile_seconds``."""
        self.compilations += 1
        first = [True]

        def call(*args):
            if not first[0]:
                return fn(*args)
            first[0] = False
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            self.compile_seconds += time.perf_counter() - t0
            return out

        return call

    def batcher(self, structures: Sequence[Structure], fidelities: Sequence[str], *, shuffle: bool = False, seed: int = 0) -> GraphBatcher:
        index = {name: k for k, name in enumerate(fidelities)}
        return GraphBatcher(structures, self.cfg.data.cutoff, index, self.budget, shuffle=shuffle, seed=seed)

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, model: Any, structures: Sequence[Structure]) -> dict:
        """{fidelity: metrics} of ``model`` (a ``Model`` or look-alike) on labelled ``structures``.

        A model with ``components`` (a sum of models, e.g. Δ-learning) is evaluated from the summed
        host-side predictions of its parts, so no extra step is compiled for it."""
        if not structures:
            return {}
        if hasattr(model, "components"):
            return host_metrics(structures, self.predict(model, structures), model.fidelities)
        batcher = self.batcher(structures, model.fidelities)
        metrics, _ = evaluate_batcher(self._eval_step(model), model.variables, batcher, model.fidelities, 1, None)
        return metrics

    def predict(self, model: Any, structures: Sequence[Structure]) -> list[dict[str, np.ndarray]]:
        """Per structure {"energy": float, "forces": [n, 3], "stress": [3, 3] (if computed)}.

        ``model.components`` (if present): [(part, fidelity name the part predicts at)], summed."""
        out: list[dict | None] = [None] * len(structures)
        if not structures:
            return []
        if hasattr(model, "components"):
            total: list[dict] | None = None
            for part, name in model.components:
                pred = self.predict(part, [replace(s, fidelity=name) for s in structures])
                total = pred if total is None else [{k: a[k] + b[k] for k in a} for a, b in zip(total, pred)]
            return total or []
        batcher = self.batcher(structures, model.fidelities)
        step_fn = self._eval_step(model)
        for step in iterate_steps(batcher, 0, 1, None):
            _, pred = jax.device_get(step_fn(model.variables, step.batch))
            n_node = np.asarray(step.batch.n_node[0])
            starts = np.concatenate([[0], np.cumsum(n_node)[:-1]])
            for g, k in enumerate(step.structures):
                sl = slice(starts[g], starts[g] + n_node[g])
                item = {"energy": float(pred["energy"][0][g]), "forces": np.asarray(pred["forces"][0][sl], np.float64)}
                if "stress" in pred:
                    item["stress"] = np.asarray(pred["stress"][0][g], np.float64)
                out[k] = item
        return out  # type: ignore[return-value]

    # ---- training ------------------------------------------------------------------------------
    def fit(
        self,
        model: Model,
        train: Sequence[Structure],
        valid: Sequence[Structure],
        *,
        steps: int,
        seed: int,
        select: str,
        fidelity_weights: dict[str, float] | None = None,
        trainable: tuple[str, ...] | None = None,
        label: str = "",
    ) -> Fitted:
        """Train ``model`` for ``steps`` Adam steps with a fresh optimiser state; keep the weights
        with the best ``train.best_metric`` on the ``select`` fidelity of ``valid`` (checked every
        ``eval_every`` steps and at the end; the last weights when ``valid`` is empty).

        fidelity_weights: per-fidelity structure weights (1 where not given); trainable: top-level
        param groups that train (None = all), e.g. ("readout",) for a frozen backbone.
        """
        from mfjax.errors import DataError

        if not train:
            raise DataError(f"{label or 'fit'}: no training structures")
        t0, compile0 = time.perf_counter(), self.compile_seconds
        fids = model.fidelities
        fw = loss_lib.fidelity_weight_vector(fids, {k: v for k, v in (fidelity_weights or {}).items() if k in fids})
        optimizer = make_optimizer(self.cfg, steps)
        step_fn = self._train_step(model, fw, trainable, optimizer)
        state = create_state(model.variables, optimizer, seed, self.cfg.train.ema is not None)
        self.initial_state = state
        batcher = self.batcher(train, fids, shuffle=True, seed=seed)
        every = self.eval_every
        metric = self.cfg.train.best_metric
        best = (None, jax.device_get(state.variables()), 0)
        history: list[dict] = []
        done, epoch, bad = 0, 0, 0
        while done < steps:
            for step in iterate_steps(batcher, epoch, 1, None):
                state, logs = step_fn(state, step.batch)
                done += 1
                bad = 0 if bool(logs["finite"]) else bad + 1
                if bad >= self.cfg.train.max_nonfinite_steps:
                    raise FloatingPointError(f"{label}: {bad} non-finite losses in a row at step {done}")
                if done % every == 0 or done == steps:
                    value = self._validate(model, state, valid, select, metric)
                    history.append({"step": done, "loss": float(logs["loss"]), metric: value})
                    if value is not None and (best[0] is None or value < best[0]):
                        best = (value, jax.device_get(state.variables()), done)
                    shown = "-" if value is None else f"{value:.4g}"
                    self.log(f"  {label} step {done}/{steps}  loss {float(logs['loss']):.4g}  valid {select} {metric} {shown}")
                if done >= steps:
                    break
            epoch += 1
        variables = best[1] if best[0] is not None else jax.device_get(state.variables())
        seconds = time.perf_counter() - t0 - (self.compile_seconds - compile0)  # compilation not included
        return Fitted(Model(model.spec, variables), steps, best[2] if best[0] is not None else done, best[0],
                      seconds, history)

    def _validate(self, model: Model, state, valid: Sequence[Structure], select: str, metric: str) -> float | None:
        if not valid:
            return None
        current = Model(model.spec, state.variables())
        return self.evaluate(current, valid).get(select, {}).get(metric)


def host_metrics(structures: Sequence[Structure], predictions: Sequence[dict], fidelities: Sequence[str]) -> dict:
    """{fidelity: metrics} from host-side predictions, with ``MetricAccumulator``'s definitions."""
    from mfjax.training.metrics import SUM_KEYS, MetricAccumulator

    acc = MetricAccumulator(fidelities)
    for s, p in zip(structures, predictions):
        sums = {k: np.zeros(len(fidelities)) for k in SUM_KEYS}
        f = list(fidelities).index(s.fidelity)
        sums["n"][f] = 1.0
        if s.energy is not None:
            err = (p["energy"] - s.energy) / s.num_atoms
            sums["e_abs"][f], sums["e_sq"][f], sums["e_cnt"][f] = abs(err), err**2, 1.0
        if s.forces is not None:
            err = np.asarray(p["forces"]) - s.forces
            sums["f_abs"][f], sums["f_sq"][f], sums["f_cnt"][f] = np.abs(err).sum(), (err**2).sum(), err.size
        if s.stress is not None and "stress" in p:
            err = np.asarray(p["stress"]) - s.stress
            voigt = err[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            sums["s_abs"][f], sums["s_cnt"][f] = np.abs(voigt).sum(), 6.0
        acc.add(sums)
    return acc.result()


def with_fidelities(model: Model, fidelities: Sequence[str], e0: Any = None) -> Model:
    """The same weights under other fidelity names (same count), optionally with a new E0."""
    if len(fidelities) != len(model.fidelities):
        raise ValueError(f"cannot rename {model.fidelities} to {tuple(fidelities)}")
    constants = dict(model.variables["constants"])
    if e0 is not None:
        constants["e0"] = np.asarray(e0, np.asarray(constants["e0"]).dtype).reshape(np.shape(constants["e0"]))
    return Model(replace(model.spec, fidelities=tuple(fidelities)), {**model.variables, "constants": constants})


def export_potential(path, model: Model, cutoff: float, training: dict | None = None):
    """Export a ``Model`` as a "potential" bundle (``mfjax.inference.export_model``)."""
    from mfjax.inference import export_model

    return export_model(path, model_config=model.spec.config, species=model.spec.species,
                        fidelities=model.fidelities, cutoff=cutoff, avg_num_neighbors=model.spec.avg_num_neighbors,
                        variables=model.variables, training=training)
