"""The analytic Lennard-Jones reference potential: a documented oracle on the model protocol.

``lennard_jones_model`` returns a :class:`LennardJonesModel`, which has what MD and the ASE
calculator use from a ``mfjax.model.Model`` (``apply_fn(variables, graph, edge_vectors) -> [N]``,
``variables``, ``species``, ``fidelities``, ``cutoff``, ``fidelity_index(name)``,
``calculator(fidelity)``; see ``mfjax.md.protocol.PotentialLike``). Because its energy is known in
closed form (ASE's ``LennardJones`` computes the same), it checks the force / stress code, the
calculator and the jax-md path against an independent implementation; ``mfjax md toy-lj`` runs it
for demonstrations. Each fidelity has its own epsilon, so fidelity handling is exercised too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data import fidelity as fidelity_names
from mfjax.data.graph import Graph, node_graph_index, node_mask, num_nodes
from mfjax.model.calculator import MfjaxCalculator

__all__ = ["LennardJonesModel", "lennard_jones_apply", "lennard_jones_model"]


@dataclass(frozen=True)
class LennardJonesModel:
    """The LJ oracle (see the module docstring); ``variables`` = {"params": {"epsilon" [F], "sigma"}}."""

    apply_fn: Callable[[Any, Graph, jax.Array], jax.Array]
    variables: Any
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    cutoff: float
    info: dict = field(default_factory=dict)

    def fidelity_index(self, name: str | None = None) -> int:
        return fidelity_names.resolve(self.fidelities, name)

    def calculator(self, fidelity: str | None = None, **kwargs) -> MfjaxCalculator:
        return MfjaxCalculator(self, fidelity=fidelity, **kwargs)


def lennard_jones_apply(cutoff: float, smooth: bool = True) -> Callable[[Any, Graph, jax.Array], jax.Array]:
    """``apply_fn(variables, graph, edge_vectors) -> [N]`` atomic LJ energies (eV).

    variables: {"params": {"epsilon": [n_fid] eV, "sigma": [] Å}}; the fidelity of each graph picks
    its epsilon. Pair energy phi(r) = 4 eps ((s/r)^12 - (s/r)^6), shifted to zero at the cutoff;
    ``smooth`` also shifts the force (continuous forces, for MD), otherwise it matches ASE's
    ``LennardJones(smooth=False)``. Each edge gives half its pair energy to its receiver;
    zero-length edges and padding nodes give 0.
    """

    def apply_fn(variables, graph: Graph, edge_vectors: jax.Array) -> jax.Array:
        params = variables["params"]
        node_graph = node_graph_index(graph)
        eps_node = params["epsilon"][graph.globals.fidelity[node_graph]]  # [N]
        sigma = params["sigma"]
        r2 = jnp.sum(edge_vectors**2, axis=-1)  # [E]
        live = (r2 > 0) & (r2 < cutoff**2)
        r = jnp.sqrt(jnp.where(live, r2, 1.0))

        def phi(x):
            s6 = (sigma / x) ** 6
            return 4.0 * (s6 * s6 - s6)

        rc = jnp.asarray(cutoff, r.dtype)
        pair = phi(r) - phi(rc)
        if smooth:
            dphi_rc = jax.grad(phi)(rc)
            pair = pair - (r - rc) * dphi_rc
        pair = jnp.where(live, pair, 0.0)
        atomic = 0.5 * jax.ops.segment_sum(pair, graph.receivers, num_segments=num_nodes(graph))
        return jnp.where(node_mask(graph), eps_node * atomic, 0.0)

    return apply_fn


def lennard_jones_model(
    epsilon: dict[str, float] | None = None,
    sigma: float = 2.0,
    cutoff: float = 5.0,
    species: tuple[int, ...] = (1, 3, 6, 8, 14),
    smooth: bool = True,
) -> "LennardJonesModel":
    """A multi-fidelity LJ oracle; ``epsilon`` maps fidelity name -> eps (eV)."""
    epsilon = {"low": 0.010, "high": 0.012} if epsilon is None else dict(epsilon)
    names = tuple(epsilon)
    variables = {
        "params": {
            "epsilon": jnp.asarray(np.array([epsilon[n] for n in names])),
            "sigma": jnp.asarray(float(sigma)),
        }
    }
    return LennardJonesModel(
        apply_fn=lennard_jones_apply(cutoff, smooth), variables=variables, species=tuple(species),
        fidelities=names, cutoff=float(cutoff), info={"kind": "lennard-jones", "smooth": smooth},
    )
