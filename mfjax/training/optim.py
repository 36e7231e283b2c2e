"""The optimiser (the one place an optax optimiser is built), its learning-rate schedule and the EMA
of the weights (SPEC §4).

The schedule's numbers (lr, lr_final, warm-up steps, total steps, kind) live in the optimiser
*state*, not in the traced code: ``make_optimizer(train, 100)`` and ``make_optimizer(train, 900)``
have the same ``update`` function, so one compiled train step serves every run of a kind (an
ablation trains dozens of models of one architecture with different step budgets). The state's
update count may start past 0 (``start_step``): a fine-tuning stage then continues the decay of
one schedule over the whole pipeline instead of starting a new one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["SCHEDULES", "ScheduleState", "make_schedule", "make_optimizer", "optimizer_key", "learning_rate",
           "ema_decay_at", "ema_update"]

#: Schedule kinds, encoded by their position in the state.
SCHEDULES = ("linear", "cosine", "constant")


class ScheduleState(NamedTuple):
    """count: [] int32 updates applied; hyper: [5] float32 (lr, lr_final, warmup, total, kind)."""

    count: jax.Array
    hyper: jax.Array


def _hyper(lr: float, lr_final: float, total_steps: int, kind: str, warmup_steps: int) -> np.ndarray:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {list(SCHEDULES)}")
    return np.asarray([lr, lr_final, max(int(warmup_steps), 0), max(int(total_steps), 1), SCHEDULES.index(kind)],
                      np.float32)


def schedule_value(hyper: jax.Array, step: jax.Array) -> jax.Array:
    """Learning rate at ``step``: linear warm-up from 0 to lr over ``warmup`` steps, then linear or
    cosine decay to lr_final at ``total`` steps (held after), or constant lr."""
    lr, lr_final, warmup, total, kind = (hyper[k] for k in range(5))
    t = jnp.asarray(step, jnp.float32)
    decay = jnp.maximum(total - warmup, 1.0)
    frac = jnp.clip((t - warmup) / decay, 0.0, 1.0)
    linear = lr + (lr_final - lr) * frac
    cosine = lr_final + (lr - lr_final) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    main = jnp.where(kind == 0, linear, jnp.where(kind == 1, cosine, lr))
    warm = lr * t / jnp.maximum(warmup, 1.0)
    return jnp.where(t < warmup, warm, main)


def make_schedule(
    lr: float, lr_final: float, total_steps: int, kind: str = "linear", warmup_steps: int = 0
) -> optax.Schedule:
    """The schedule as a function of the step (host side: logs and tests)."""
    hyper = _hyper(lr, lr_final, total_steps, kind, warmup_steps)
    return lambda step: schedule_value(hyper, step)


def _scale_by_schedule(hyper: np.ndarray, start_step: int = 0) -> optax.GradientTransformation:
    """Multiply updates by -lr(count), with the schedule's numbers stored in the state by ``init``
    (a new array per state: a donated state never takes another's buffers with it); the count
    starts at ``start_step``."""

    def init(params) -> ScheduleState:
        del params
        return ScheduleState(jnp.asarray(int(start_step), jnp.int32), jnp.asarray(hyper))

    def update(updates, state: ScheduleState, params=None):
        del params
        rate = schedule_value(state.hyper, state.count)
        updates = jax.tree.map(lambda u: (-rate * u).astype(u.dtype), updates)
        return updates, ScheduleState(state.count + 1, state.hyper)

    return optax.GradientTransformation(init, update)


def make_optimizer(train_cfg: Any, total_steps: int, start_step: int = 0) -> tuple[optax.GradientTransformation,
                                                                                   optax.Schedule]:
    """(optimizer, schedule) from ``train``: optional global-norm clipping (``grad_clip``), Adam or
    AdamW (``optimizer``, ``weight_decay``) and the scheduled learning rate (``lr``, ``lr_final``,
    ``schedule``, ``warmup_steps``) over ``total_steps``; the first update uses the schedule's
    value at ``start_step`` (0: the start of the decay)."""
    if not 0 <= int(start_step) <= int(total_steps):
        raise ValueError(f"start_step {start_step} must be in [0, total_steps = {total_steps}]")
    hyper = _hyper(train_cfg.lr, train_cfg.lr_final, total_steps, train_cfg.schedule, train_cfg.warmup_steps)
    parts = [optax.clip_by_global_norm(train_cfg.grad_clip)] if train_cfg.grad_clip is not None else []
    parts.append(optax.scale_by_adam())
    if train_cfg.optimizer == "adamw":
        parts.append(optax.add_decayed_weights(train_cfg.weight_decay))
    elif train_cfg.optimizer != "adam":
        raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}")
    parts.append(_scale_by_schedule(hyper, start_step))
    return optax.chain(*parts), (lambda step: schedule_value(hyper, step))


def optimizer_key(train_cfg: Any) -> tuple:
    """What changes the optimiser's *code* (the schedule's numbers do not): equal keys share steps."""
    return (train_cfg.optimizer, float(train_cfg.weight_decay) if train_cfg.optimizer == "adamw" else 0.0,
            train_cfg.grad_clip)


def learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate the next update of ``opt_state`` applies (0 when it has no schedule)."""
    for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ScheduleState)):
        if isinstance(leaf, ScheduleState):
            return schedule_value(leaf.hyper, leaf.count)
    return jnp.zeros((), jnp.float32)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """Warm-started EMA decay min(decay, (1 + t) / (10 + t)) so early averages are not stuck at init."""
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, params, decay: float, step: jax.Array):
    """ema <- d * ema + (1 - d) * params with the warm-started decay of :func:`ema_decay_at`."""
    d = ema_decay_at(decay, step)
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
