"""SevenNet's route to a new fidelity: append it to a trained LF model, then train on all data.

``append_model`` adds the HF fidelity to the LF model with ``mfjax.nn.model.append_fidelity``
(zero-initialised one-hot weights, shared weights rescaled by sqrt(fan_in_new / fan_in_old), an E0
row fitted on the HF training data), so the LF predictions are unchanged; ``run`` checks that on LF
validation structures, then trains on LF + HF data like ``multi_fidelity`` (same fidelity weights)
for ``budget.total_steps - pretrain_steps`` steps, continuing the pre-training's learning-rate
decay (``budget.schedule: continued``) or starting a new one (``per_stage``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from mfjax.data.structures import Structure
from mfjax.model import Model
from mfjax.nn.model import append_fidelity
from mfjax.strategies.base import Context, Outcome


def append_model(ctx: Context, lf: Model, hf_train: Sequence[Structure]) -> Model:
    """``lf`` (fidelities (low,)) with the HF fidelity appended: fidelities (low, high)."""
    d = ctx.data
    row = ctx.new_fidelity_e0(lf, hf_train, d.high)
    variables, fids = append_fidelity(lf.variables, lf.spec.config, lf.fidelities, d.high, e0_row=row)
    return lf.replace(spec=lf.spec.with_fidelities(tuple(fids)), variables=jax.device_get(variables))


def old_fidelity_shift(ctx: Context, before: Model, after: Model, structures: Sequence[Structure]) -> float:
    """max |E_after - E_before| (eV) at the old fidelity over ``structures``."""
    a = ctx.predict(before, structures)
    b = ctx.predict(after, structures)
    return float(max((abs(x["energy"] - y["energy"]) for x, y in zip(a, b)), default=0.0))


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    d = ctx.data
    lf_fit = ctx.lf_model(seed)
    lf = lf_fit.model
    model = append_model(ctx, lf, hf_train)
    probe = (d.lf_valid or d.lf_train)[:8]
    shift = old_fidelity_shift(ctx, lf, model, probe)
    train = list(d.lf_train) + list(hf_train)
    fitted = ctx.stage_fit("continue", model, train, d.hf_valid, seed=seed, select=d.high, stage="append",
                           fidelity_weights=ctx.fidelity_weights(train, (d.low, d.high)))
    notes = {"n_lf_train": len(d.lf_train), "append_lf_shift_ev": float(np.float32(shift))}
    return Outcome(fitted.model, [fitted], notes, low=d.low, shared=[lf_fit])
