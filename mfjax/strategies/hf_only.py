"""HF-only: the shared architecture trained on the high-fidelity subset alone (SPEC §5), with the
same total step budget as every other strategy (``budget.total_steps``, from scratch): the
baseline the multi-fidelity claims are measured against."""

from __future__ import annotations

from typing import Sequence

from mfjax.data.structures import Structure
from mfjax.strategies.base import Context, Outcome


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    """A fresh single-fidelity model (E0 and scale from ``hf_train``) trained on ``hf_train`` only
    for ``budget.total_steps`` steps."""
    d = ctx.data
    if any(s.fidelity != d.high for s in hf_train):
        raise ValueError("hf_only: the training structures must all be high-fidelity")
    model = ctx.fresh(ctx.spec((d.high,)), hf_train, seed)
    fitted = ctx.stage_fit("scratch", model, hf_train, d.hf_valid, seed=seed, select=d.high, stage="hf")
    return Outcome(fitted.model, [fitted], {"n_lf_train": 0})
