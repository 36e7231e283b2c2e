"""HF-only: the shared architecture trained on the high-fidelity subset alone (SPEC §5)."""

from __future__ import annotations

from typing import Sequence

from mfjax.data.structures import Structure
from mfjax.strategies.base import Context, Outcome


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    """A fresh single-fidelity model (E0 and scale from ``hf_train``) trained on ``hf_train`` only."""
    d = ctx.data
    if any(s.fidelity != d.high for s in hf_train):
        raise ValueError("hf_only: the training structures must all be high-fidelity")
    model = ctx.fresh(ctx.spec((d.high,)), hf_train, seed)
    fitted = ctx.fit(model, hf_train, d.hf_valid, steps=ctx.settings.steps.hf, seed=seed, select=d.high, stage="hf")
    return Outcome(fitted.model, [fitted], {"n_lf_train": 0})
