"""Schedules (warm-up, linear, cosine) and the EMA of the weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.training.optim import ema_decay_at, ema_update, make_schedule


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
