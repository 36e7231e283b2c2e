"""Multi-fidelity training (SPEC §3, §5): one model, all LF and HF data in one shuffled stream.

``run`` conditions on the fidelity the SevenNet way (one-hot into the intro/outro/readout linears);
``run_heads`` uses fidelity-indexed readout heads instead. Both start from scratch with E0 fitted per
fidelity and the HF structures weighted by ``train.loss.fidelity_share`` (e.g. {r2scan: 0.4}: the
weights follow from the frame counts of this run) or ``train.loss.fidelity_weights``, for
``budget.total_steps`` steps (the same total as every strategy).
"""

from __future__ import annotations

from typing import Sequence

from mfjax.data.structures import Structure
from mfjax.strategies.base import Context, Outcome


def _run(ctx: Context, hf_train: Sequence[Structure], seed: int, mode: str) -> Outcome:
    d = ctx.data
    train = list(d.lf_train) + list(hf_train)
    model = ctx.fresh(ctx.spec((d.low, d.high), mode), train, seed)
    fitted = ctx.stage_fit("scratch", model, train, d.hf_valid, seed=seed, select=d.high, stage="joint",
                           fidelity_weights=ctx.fidelity_weights(train, (d.low, d.high)))
    return Outcome(fitted.model, [fitted], {"n_lf_train": len(d.lf_train), "fidelity_mode": mode}, low=d.low)


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    return _run(ctx, hf_train, seed, "conditioning")


def run_heads(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    return _run(ctx, hf_train, seed, "heads")
