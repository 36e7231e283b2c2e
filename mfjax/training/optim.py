"""Optimiser, learning-rate schedules and the EMA of the weights (SPEC §4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_schedule(
    lr: float, lr_final: float, total_steps: int, kind: str = "linear", warmup_steps: int = 0
) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then linear/cosine decay to ``lr_final``
    at ``total_steps`` (held there after), or a constant ``lr``."""
    decay_steps = max(int(total_steps) - int(warmup_steps), 1)
    if kind == "linear":
        main = optax.linear_schedule(lr, lr_final, decay_steps)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=lr_final / lr if lr else 0.0)
    elif kind == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    if warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, lr, int(warmup_steps))
    return optax.join_schedules([warm, main], [int(warmup_steps)])


def make_optimizer(train_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) from ``train``: optional global-norm clipping, then Adam or AdamW."""
    schedule = make_schedule(
        train_cfg.lr, train_cfg.lr_final, total_steps, train_cfg.schedule, train_cfg.warmup_steps
    )
    if train_cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=train_cfg.weight_decay)
    else:
        opt = optax.adam(schedule)
    if train_cfg.grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), opt)
    return opt, schedule


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """Warm-started EMA decay min(decay, (1 + t) / (10 + t)) so early averages are not stuck at init."""
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, params, decay: float, step: jax.Array):
    """ema <- d * ema + (1 - d) * params with the warm-started decay of :func:`ema_decay_at`."""
    d = ema_decay_at(decay, step)
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
