"""An analytic Lennard-Jones stand-in for a trained model (tests, examples, oracles).

``lennard_jones_model`` returns an object with the attributes MD code uses from
``mfjax.inference.TrainedModel`` (``apply_fn(variables, graph, edge_vectors) -> [N]``, ``variables``,
``species``, ``fidelities``, ``cutoff``, ``fidelity_index(name)``, ``calculator(fidelity)``), so the
calculator and the jax-md path can be checked against ASE's analytic ``LennardJones``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import Graph, node_graph_index, node_mask, num_edges, num_nodes
from mfjax.errors import FidelityError


def resolve_fidelity(fidelities: tuple[str, ...], fidelity: str | None) -> int:
    """Index of ``fidelity`` in ``fidelities``; None is allowed only for single-fidelity models."""
    if fidelity is None:
        if len(fidelities) == 1:
            return 0
        raise FidelityError(
            f"this model has {len(fidelities)} fidelities; choose one with fidelity=NAME "
            f"(available: {', '.join(fidelities)})"
        )
    if fidelity not in fidelities:
        raise FidelityError(f"unknown fidelity {fidelity!r} (available: {', '.join(fidelities)})")
    return fidelities.index(fidelity)


@dataclass(frozen=True)
class StandInModel:
    """Minimal ``TrainedModel`` look-alike: see the module docstring."""

    apply_fn: Callable[[Any, Graph, jax.Array], jax.Array]
    variables: Any
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    cutoff: float
    info: dict = field(default_factory=dict)

    def fidelity_index(self, name: str | None) -> int:
        return resolve_fidelity(self.fidelities, name)

    def calculator(self, fidelity: str | None = None, **kwargs):
        from mfjax.md.calculator import MfjaxCalculator

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
) -> StandInModel:
    """A multi-fidelity LJ stand-in; ``epsilon`` maps fidelity name -> eps (eV)."""
    epsilon = {"low": 0.010, "high": 0.012} if epsilon is None else dict(epsilon)
    names = tuple(epsilon)
    variables = {
        "params": {
            "epsilon": jnp.asarray(np.array([epsilon[n] for n in names])),
            "sigma": jnp.asarray(float(sigma)),
        }
    }
    return StandInModel(
        apply_fn=lennard_jones_apply(cutoff, smooth), variables=variables, species=tuple(species),
        fidelities=names, cutoff=float(cutoff), info={"kind": "lennard-jones", "smooth": smooth},
    )


def random_potential_model(
    species: tuple[int, ...] = (1, 6, 8, 14),
    fidelities: tuple[str, ...] = ("pbe", "r2scan"),
    cutoff: float = 4.0,
    num_layers: int = 2,
    seed: int = 0,
    scale: float = 0.5,
    **overrides,
) -> StandInModel:
    """An untrained ``mfjax.nn.model.Potential`` (preset "small") with random weights and E0 = -1 eV.

    Exercises the real model code path in tests without a trained bundle; ``overrides`` go to the
    preset (e.g. ``hidden_irreps="8x0e+4x1e", lmax=1`` for a fast-compiling model).
    """
    import ase.build

    from mfjax.data.batching import pad_graph, structures_to_graph
    from mfjax.data.structures import structure_from_atoms
    from mfjax.nn.model import Potential, init_variables
    from mfjax.nn.presets import load_preset

    config = load_preset("small", cutoff=float(cutoff), num_layers=int(num_layers), **overrides)
    module = Potential(config, tuple(species), tuple(fidelities), 10.0)
    atoms = ase.build.molecule("CH4")
    atoms.numbers[:] = species[0]
    graph = structures_to_graph([structure_from_atoms(atoms, fidelities[0])], cutoff, {fidelities[0]: 0})
    graph = jax.tree.map(jnp.asarray, pad_graph(graph, num_nodes(graph) + 1, num_edges(graph), 2))
    e0 = -np.ones((len(fidelities), len(species)))
    variables = init_variables(module, jax.random.PRNGKey(seed), graph, e0=e0, scale=scale)
    return StandInModel(module.apply, variables, tuple(species), tuple(fidelities), float(cutoff),
                        info={"kind": "random-potential"})
