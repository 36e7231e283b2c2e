"""Ensembles trained in one vectorised run: ``fit``'s train step mapped over a member axis.

An ensemble ``Model`` (``ensemble_size`` K, variables [K, ...]; ``mfjax.model.uncertainty``) trains
through the one training loop (``mfjax.training.fit.fit``) unchanged, given an ``EnsembleStepCache``
(``fit_ensemble``): ``create_state`` of the stacked variables holds per-member weights, optimiser
moments and EMA [K, ...] and shared step counters; the train step is the cached single-model step
(``StepCache.train_step`` of one member) under ``jax.vmap`` over the member axis
(``vmap_train_step``): one compilation for K members, the same batches for every member, per-member
gradient clipping and non-finite guard. The step's logs are the members' mean loss and gradient
norm (``finite``: every member finite). Validation evaluates the ensemble mean (its ``apply_fn``),
so the best weights are the best ensemble.

Members differ by their initial weights: ``init_ensemble`` draws K fresh initialisations (seeds
``seed + k``); ``ensemble_from_pretrained`` starts every member from one (e.g. LF-pretrained) model
and re-draws the param groups in ``reinit`` (default: the readout heads) per member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mfjax.errors import ConfigError
from mfjax.model import Model, ModelSpec
from mfjax.training.compiled import StepCache
from mfjax.training.fit import fit
from mfjax.training.optim import make_optimizer
from mfjax.training.sharding import batch_sharding, replicated
from mfjax.training.state import TrainState, create_state

__all__ = ["EnsembleStepCache", "ensemble_from_pretrained", "fit_ensemble", "init_ensemble", "vmap_train_step"]


def _check_size(k: int) -> int:
    if int(k) < 1:
        raise ConfigError(f"train.ensemble must be >= 1, got {k}")
    return int(k)


def init_ensemble(spec: ModelSpec, k: int, seed: int, example, e0: Any = None, scale: float = 1.0) -> Model:
    """K freshly initialised members of ``spec`` (member j from seed ``seed + j``), as one Model."""
    k = _check_size(k)
    members = [Model(spec, spec.init(seed + j, example, e0=e0, scale=scale)) for j in range(k)]
    return Model.ensemble(members)


def ensemble_from_pretrained(model: Model, k: int, seed: int, example, reinit: Sequence[str] = ("readout",)) -> Model:
    """K members that start from ``model``'s weights with the top-level param groups ``reinit``
    drawn afresh per member (seed ``seed + j``); E0 and scale are kept. ``reinit=()`` gives K
    identical members (zero spread)."""
    k = _check_size(k)
    if model.is_ensemble or model.base is not None:
        raise ConfigError("ensemble_from_pretrained needs one plain potential")
    host = jax.device_get(model.variables)
    unknown = sorted(set(reinit) - set(host["params"]))
    if unknown:
        raise ConfigError(f"ensemble reinit: no param group(s) {unknown}; available: {sorted(host['params'])}")
    members = []
    for j in range(k):
        fresh = model.spec.init(seed + j, example)["params"] if reinit else {}
        params = {name: (fresh[name] if name in reinit else value) for name, value in host["params"].items()}
        members.append(Model(model.spec, {**host, "params": params}))
    return Model.ensemble(members)


def _reduce_logs(logs: dict) -> dict:
    """The members' logs [K, ...] -> one set: mean loss, per-fidelity loss and gradient norm; finite
    when every member is; lr and label counts of member 0 (equal for all)."""
    return {"loss": jnp.mean(logs["loss"]), "per_fidelity_loss": jnp.mean(logs["per_fidelity_loss"], axis=0),
            "grad_norm": jnp.mean(logs["grad_norm"]), "finite": jnp.all(logs["finite"]), "lr": logs["lr"][0],
            "counts": logs["counts"][0]}


def _shared_axes(state, template) -> Any:
    """Per leaf of an ensemble's ``state``: 0 where it holds one value per member (its rank is one
    more than ``template``'s, a single member's state), None where members share it (step counts,
    the PRNG key: every member takes every step)."""
    return jax.tree.map(lambda full, one: 0 if np.ndim(full) == np.ndim(one) + 1 else None, state, template)


def vmap_train_step(step: Callable, template: TrainState, mesh: Mesh | None) -> Callable:
    """A jitted ``(state, batch) -> (state, logs)`` for an ensemble from the single-model ``step``:
    ``jax.vmap`` over the members' axis of ``state`` (``_shared_axes`` against ``template``, one
    member's state), the batch shared, logs reduced (``_reduce_logs``)."""

    def ensemble_step(state, batch):
        axes = _shared_axes(state, template)
        new, logs = jax.vmap(step, in_axes=(axes, None))(state, batch)
        new = jax.tree.map(lambda x, ax: x if ax == 0 else x[0], new, axes)
        return new, _reduce_logs(logs)

    kwargs: dict = {"donate_argnums": (0,)}
    if mesh is not None:
        rep = replicated(mesh)
        kwargs.update(in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, rep))
    return jax.jit(ensemble_step, **kwargs)


class EnsembleStepCache(StepCache):
    """A ``StepCache`` that also trains ensembles: for an ensemble model, ``train_step`` is the
    cached single-member step (``StepCache.train_step`` of member 0) under ``vmap_train_step``.
    Evaluation needs nothing new (an ensemble's ``apply_fn`` is the members' mean). ``fit`` with
    this cache trains an ensemble; ``fit_ensemble`` passes one."""

    def train_step(self, model: Model, train_cfg, **kwargs) -> Callable:
        if not model.is_ensemble:
            return super().train_step(model, train_cfg, **kwargs)
        member = model.members()[0]
        single = super().train_step(member, train_cfg, **kwargs)
        key = ("ensemble-train", model.ensemble_size, id(single))
        if key not in self._steps:
            optimizer, _ = make_optimizer(train_cfg, 1)
            template = create_state(member.variables, optimizer, 0, train_cfg.ema is not None)
            self._steps[key] = self._timed(vmap_train_step(single.jitted, template, kwargs.get("mesh")))
        return self._steps[key]


def fit_ensemble(model: Model, train, valid, train_cfg, *, cache: StepCache | None = None, **kwargs):
    """``fit`` for an ensemble (or a single) model: the one training loop with an
    ``EnsembleStepCache`` (``cache`` must be one when given)."""
    if cache is None:
        cache = EnsembleStepCache()
    if not isinstance(cache, EnsembleStepCache):
        raise TypeError("fit_ensemble: cache must be an EnsembleStepCache")
    return fit(model, train, valid, train_cfg, cache=cache, **kwargs)
