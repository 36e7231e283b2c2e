"""``energy_fn``: a model's energy as a pure JAX function of the Cartesian positions.

For derivatives that ``Model.predict`` does not give: Hessians (``jax.hessian``), vibrational
modes and phonons at Gamma, forward-mode sensitivities (``jax.jvp``, ``jax.jacfwd``), or any
user-defined function of the positions. The structure's topology is fixed once, on the host:

* the neighbour list is built from ``atoms`` at ``cutoff + skin`` (so pairs just outside the
  cutoff are in the graph already) and the graph is built by ``mfjax.data.single.single_graph``;
* inside the function only the edge vectors ``R_j - R_i + shift @ cell`` follow the positions;
  an edge longer than the cutoff contributes exactly nothing (value and derivatives), because the
  model's radial features are multiplied by its smooth envelope, which is 0 for ``r >= r_c``.

Validity: the function equals the model (``Model.predict``) for every positions array whose
atoms moved less than ``skin / 2`` from ``atoms.positions`` (then no pair that started outside
``cutoff + skin`` can come within the cutoff). The cell, the species and the periodicity stay
those of ``atoms``. Derivatives are the model's: the XPLOR envelope (the presets' default) is
C^1 at r_on = r_c - 0.5 and at r_c, so second derivatives (the Hessian) jump where an edge length
crosses r_on or r_c; they are exact at any geometry where no edge length equals either value.

Precision: positions are cast to the model's dtype. Use a float64 model (``jax_enable_x64`` and
``load_model(path, precision="float64")`` or ``model.astype(jnp.float64)``) for Hessians and
finite-difference checks.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import edge_vectors
from mfjax.data.neighbors import neighbor_list
from mfjax.data.single import single_graph
from mfjax.data.structures import structure_from_atoms
from mfjax.model.calculator import check_species
from mfjax.physics import graph_energies

__all__ = ["energy_fn"]

Array = jax.Array

#: Default skin (Å): atoms may move up to skin / 2 = 0.25 Å from the reference geometry.
DEFAULT_SKIN = 0.5


def energy_fn(model: Any, atoms, fidelity: str | None = None, *, skin: float = DEFAULT_SKIN
              ) -> Callable[[Array], Array]:
    """``energy(positions [N, 3] Å) -> []`` eV: the energy of ``atoms`` (free molecule or fixed
    periodic cell) at ``fidelity`` as a pure JAX function of its Cartesian positions.

    model: a ``mfjax.model.Model`` (a Δ model too); atoms: ``ase.Atoms``, the reference geometry
    (its species, cell and pbc are fixed; its positions define the neighbour list); fidelity: a
    name from ``model.fidelities`` (may be omitted for a single-fidelity model); skin: Å, the
    neighbour-list margin (valid while every atom stays within ``skin / 2`` of ``atoms.positions``;
    see the module docstring).

    The function closes over the model's variables and a fixed graph, so it composes with
    ``jax.jit``, ``jax.grad`` (forces = -grad), ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian``::

        energy = energy_fn(model, atoms, "pbe")
        hessian = jax.jit(jax.hessian(energy))(jnp.asarray(atoms.positions))  # [N, 3, N, 3]
    """
    if skin < 0.0:
        raise ValueError(f"skin must be >= 0, got {skin}")
    index = model.fidelity_index(fidelity)
    check_species(atoms.numbers, model.species, "the structure")
    structure = structure_from_atoms(atoms, model.fidelities[index])
    n_atoms = structure.num_atoms
    nl = neighbor_list(structure.positions, structure.cell, structure.pbc, model.cutoff + skin)
    dtype = np.dtype(model.dtype)
    host = single_graph(
        structure.positions.astype(dtype), structure.species, nl.senders, nl.receivers,
        shifts=nl.shifts.astype(dtype), cell=structure.cell.astype(dtype), pbc=structure.pbc, fidelity=index,
        n_edge=max(len(nl.senders), 1),  # an isolated atom still gets one (padding) edge
    )
    graph = jax.tree.map(jnp.asarray, host)
    padding = jnp.zeros((host.nodes.positions.shape[0] - n_atoms, 3), dtype)
    apply_fn, variables = model.apply_fn, model.variables

    def energy(positions: Array) -> Array:
        positions = jnp.asarray(positions, dtype)
        if positions.shape != (n_atoms, 3):
            raise ValueError(f"positions must have shape ({n_atoms}, 3), got {positions.shape}")
        vectors = edge_vectors(graph, jnp.concatenate([positions, padding]))
        return graph_energies(apply_fn, variables, graph, vectors)[0]

    return energy
