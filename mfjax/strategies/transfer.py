"""Transfer learning (SPEC §5): pre-train on the low fidelity, fine-tune on the high fidelity.

The fine-tuned model starts from the LF model's weights (all of them, or with the backbone frozen:
only the readout trains), with E0 refitted on the HF training data, the LF model's energy scale and
mean neighbour count, and a fresh optimiser (new Adam moments) for ``budget.total_steps -
pretrain_steps`` steps; its learning rate continues the pre-training's decay (``budget.schedule:
continued``) or starts a new one (``per_stage``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mfjax.data.structures import Structure
from mfjax.model import Model
from mfjax.strategies.base import Context, Outcome

#: Param groups trained when the backbone is frozen.
HEAD = ("readout",)


def initial_model(ctx: Context, lf: Model, hf_train: Sequence[Structure]) -> Model:
    """The LF weights renamed to the HF fidelity, with E0 refitted on ``hf_train`` (shrunk towards the
    LF E0: with fewer HF frames than elements the fit is underdetermined)."""
    high = ctx.data.high
    constants = dict(lf.variables["constants"])
    old = np.asarray(constants["e0"])
    constants["e0"] = np.asarray(ctx.new_fidelity_e0(lf, hf_train, high), old.dtype).reshape(old.shape)
    return lf.replace(spec=lf.spec.with_fidelities((high,)), variables={**lf.variables, "constants": constants})


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    d = ctx.data
    lf = ctx.lf_model(seed)
    freeze = ctx.settings.transfer_freeze == "backbone"
    fitted = ctx.stage_fit("continue", initial_model(ctx, lf.model, hf_train), hf_train, d.hf_valid, seed=seed,
                           select=d.high, stage="fine_tune", trainable=HEAD if freeze else None)
    notes = {"n_lf_train": len(d.lf_train), "fine_tune": "readout only (backbone frozen)" if freeze else "all weights"}
    return Outcome(fitted.model, [fitted], notes, shared=[lf])
