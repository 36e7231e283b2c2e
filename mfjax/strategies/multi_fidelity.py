"""Multi-fidelity training (SPEC §3, §5): one model, all LF and HF data in one shuffled stream.

``run`` conditions on the fidelity the SevenNet way (one-hot into the intro/outro/readout linears);
``run_heads`` uses fidelity-indexed readout heads instead. Both start from scratch with E0 fitted per
fidelity and ``train.loss.fidelity_weights`` (e.g. {r2scan: 7}) up-weighting the HF structures.
"""

from __future__ import annotations

from typing import Sequence

from mfjax.data.structures import Structure
from mfjax.strategies.base import Context, Outcome


def _run(ctx: Context, hf_train: Sequence[Structure], seed: int, mode: str) -> Outcome:
    d = ctx.data
    train = list(d.lf_train) + list(hf_train)
    model = ctx.fresh(ctx.spec((d.low, d.high), mode), train, seed)
    fitted = ctx.fit(model, train, d.hf_valid, steps=ctx.settings.steps.joint, seed=seed, select=d.high,
                     stage="joint", fidelity_weights=ctx.fidelity_weights())
    return Outcome(fitted.model, [fitted], {"n_lf_train": len(d.lf_train), "fidelity_mode": mode}, low=d.low)


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    return _run(ctx, hf_train, seed, "conditioning")


def run_heads(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    return _run(ctx, hf_train, seed, "heads")
