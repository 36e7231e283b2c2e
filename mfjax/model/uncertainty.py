"""Ensembles of one architecture: variables with a leading member axis and their mean and spread.

An ensemble ``Model`` holds K members' variables stacked on a leading axis ([K, ...] every leaf).
Its energy is the members' mean, so forces and stress of the mean are the means of the members'
(the gradient is linear): every caller of ``apply_fn`` (MD, relaxations, evaluation) sees the
ensemble mean. The spread is computed here, from the K members' conservative predictions:

* ``energy_std`` [G] (eV): the standard deviation over members of each structure's energy;
* ``forces_std`` [N] (eV/Å): per atom, the root of the summed per-component variances over members,
  ``sqrt(sum_c var_k F_ic)`` (the spread of the force vector; 0 for identical members).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.physics import predict as physics_predict

__all__ = [
    "ensemble_apply",
    "ensemble_predict",
    "mean_and_spread",
    "member_predictions",
    "member_variables",
    "stack_members",
]


def ensemble_apply(member_apply: Callable) -> Callable:
    """``apply(variables [K, ...], graph, vectors [E, 3]) -> [N]``: the members' mean atomic energies."""

    def apply(variables, graph, vectors):
        return jnp.mean(jax.vmap(member_apply, in_axes=(0, None, None))(variables, graph, vectors), axis=0)

    return apply


def member_predictions(member_apply: Callable, variables, graph, compute_stress: bool) -> dict:
    """Every member's ``physics.predict``: {"energy": [K, G], "forces": [K, N, 3][, "stress": [K, G, 3, 3]]}."""
    return jax.vmap(lambda v: physics_predict(member_apply, v, graph, compute_stress=compute_stress))(variables)


def mean_and_spread(members: dict) -> dict:
    """The mean of ``member_predictions`` plus "energy_std" [G] and "forces_std" [N] (module docstring)."""
    out = {name: jnp.mean(value, axis=0) for name, value in members.items()}
    out["energy_std"] = jnp.std(members["energy"], axis=0)
    out["forces_std"] = jnp.sqrt(jnp.sum(jnp.var(members["forces"], axis=0), axis=-1))
    return out


def ensemble_predict(member_apply: Callable, variables, graph, compute_stress: bool = True) -> dict:
    """Ensemble mean prediction with its spread (``mean_and_spread`` of ``member_predictions``)."""
    return mean_and_spread(member_predictions(member_apply, variables, graph, compute_stress))


def stack_members(variables: Sequence[Any]) -> Any:
    """Host variables of K members (same structure and shapes) stacked on a new leading axis."""
    if not variables:
        raise ValueError("an ensemble needs at least one member")
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *variables)


def member_variables(variables, k: int) -> Any:
    """Member ``k``'s variables (the leading axis indexed)."""
    return jax.tree.map(lambda x: x[k], variables)
