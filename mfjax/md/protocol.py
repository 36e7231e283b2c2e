"""What ``mfjax.md`` accepts as a potential: ``mfjax.model.Model`` and the Lennard-Jones oracle
(``mfjax.md.lennard_jones``) both satisfy :class:`PotentialLike`."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from mfjax.data.graph import Graph

__all__ = ["PotentialLike"]


@runtime_checkable
class PotentialLike(Protocol):
    """A potential that MD can run.

    apply_fn: ``(variables, graph, edge_vectors [E, 3]) -> [N]`` atomic energies (eV), 0 on padding.
    variables: the pytree ``apply_fn`` takes. species: atomic numbers it knows. fidelities: names.
    cutoff: Å. fidelity_index: name -> index (FidelityError lists the names). calculator: an ASE
    calculator at one fidelity.
    """

    variables: Any
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    cutoff: float

    def apply_fn(self, variables: Any, graph: Graph, edge_vectors: jax.Array) -> jax.Array: ...

    def fidelity_index(self, name: str | None = None) -> int: ...

    def calculator(self, fidelity: str | None = None, **kwargs) -> Any: ...
