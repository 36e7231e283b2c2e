"""The training-state pytree: everything a step reads and writes, and what a checkpoint holds."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class TrainState:
    """params: trained weights; constants: untrained variables (E0, scale); opt_state: optax state;
    ema: exponential moving average of params (None when off); step: [] int32 applied updates;
    rng: [2] uint32 raw PRNG key, split once per step (reserved for stochastic training)."""

    params: Any
    constants: Any
    opt_state: Any
    ema: Any
    step: jax.Array
    rng: jax.Array

    def variables(self, use_ema: bool = True) -> dict:
        """Flax variables for evaluation: EMA weights when kept (and ``use_ema``), else the raw ones."""
        params = self.ema if (use_ema and self.ema is not None) else self.params
        return {"params": params, "constants": self.constants}


def strong(tree):
    """Copy of ``tree`` without weak types (a weak leaf would make the second step recompile)."""
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)


def create_state(
    variables: dict, optimizer: optax.GradientTransformation, seed: int, use_ema: bool
) -> TrainState:
    """A fresh state from initialised flax variables {"params", "constants"}."""
    params = strong(variables["params"])
    constants = strong(variables.get("constants", {}))
    return TrainState(
        params=params,
        constants=constants,
        opt_state=optimizer.init(params),
        ema=jax.tree.map(jnp.array, params) if use_ema else None,
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.PRNGKey(seed),
    )
