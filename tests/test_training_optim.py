"""Schedules (warm-up, linear, cosine), the optimiser (schedule numbers in its state) and the EMA."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mfjax.config import TrainConfig
from mfjax.training.optim import ema_decay_at, ema_update, learning_rate, make_optimizer, make_schedule


def test_linear_decay_hits_end_points():
    s = make_schedule(0.01, 1e-4, total_steps=100, kind="linear")
    assert float(s(0)) == pytest.approx(0.01)
    assert float(s(50)) == pytest.approx((0.01 + 1e-4) / 2, rel=1e-5)
    assert float(s(100)) == pytest.approx(1e-4, rel=1e-5)
    assert float(s(1000)) == pytest.approx(1e-4, rel=1e-5)


def test_cosine_with_warmup():
    s = make_schedule(0.01, 1e-4, total_steps=110, kind="cosine", warmup_steps=10)
    assert float(s(0)) == pytest.approx(0.0)
    assert float(s(5)) == pytest.approx(0.005, rel=1e-5)
    assert float(s(10)) == pytest.approx(0.01, rel=1e-5)
    assert float(s(60)) == pytest.approx(1e-4 + (0.01 - 1e-4) / 2, rel=1e-4)
    assert float(s(110)) == pytest.approx(1e-4, rel=1e-4)
    assert float(make_schedule(0.003, 0.0, 10, "constant")(7)) == pytest.approx(0.003)


def test_ema_update_and_warm_start():
    assert float(ema_decay_at(0.999, jnp.asarray(0))) == pytest.approx(0.1)
    assert float(ema_decay_at(0.999, jnp.asarray(10**6))) == pytest.approx(0.999)
    ema = {"w": jnp.zeros(3)}
    params = {"w": jnp.ones(3)}
    out = ema_update(ema, params, 0.9, jnp.asarray(10**6))
    np.testing.assert_allclose(out["w"], 0.1, rtol=1e-6)
    # repeated updates converge to constant params
    for t in range(200):
        ema = ema_update(ema, params, 0.9, jnp.asarray(t))
    np.testing.assert_allclose(ema["w"], 1.0, rtol=1e-6)


def test_optimizer_matches_optax_reference():
    """The schedule-in-state optimiser equals optax.adam / optax.adamw with the same schedule."""
    params = {"w": np.linspace(-1, 1, 6, dtype=np.float32)}
    grads = [{"w": np.random.default_rng(k).normal(size=6).astype(np.float32)} for k in range(5)]
    for kind, extra in (("adam", {}), ("adamw", {"weight_decay": 0.05})):
        cfg = TrainConfig(optimizer=kind, schedule="cosine", warmup_steps=2, lr=0.1, lr_final=0.01, **extra)
        ours, schedule = make_optimizer(cfg, 5)
        ref = (optax.adamw(schedule, weight_decay=0.05) if kind == "adamw" else optax.adam(schedule))
        s1, s2, p1, p2 = ours.init(params), ref.init(params), params, params
        for g in grads:
            u1, s1 = ours.update(g, s1, p1)
            u2, s2 = ref.update(g, s2, p2)
            p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-6, atol=1e-7)
        # a longer budget changes the state, not the update function
        longer, _ = make_optimizer(cfg, 500)
        u_a, _ = ours.update(grads[0], longer.init(params), params)
        u_b, _ = longer.update(grads[0], longer.init(params), params)
        np.testing.assert_array_equal(u_a["w"], u_b["w"])
        assert float(learning_rate(longer.init(params))) == 0.0  # warm-up starts at 0
