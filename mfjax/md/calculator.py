"""ASE calculator for a trained mfjax model at one fidelity.

The neighbour list is built on the host (``mfjax.data.neighbors``) for every call; the graph is
padded to node/edge capacities that only grow (by ``capacity_factor`` when exceeded), so an MD run
reuses one compiled ``predict`` instead of recompiling each step.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.structures import structure_from_atoms
from mfjax.errors import ConfigError
from mfjax.physics import predict
from mfjax.data.graph import num_edges, num_nodes


class MfjaxCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces and (periodic cells only) stress.

    model: a ``TrainedModel`` (or look-alike) with ``apply_fn``, ``variables``, ``fidelities``,
        ``cutoff``. fidelity: a name from ``model.fidelities`` (may be omitted for a single-fidelity
        model; otherwise ``FidelityError`` lists the names). capacity_factor: growth factor of the
        padding capacities (> 1) when a structure no longer fits. initial_margin: spare fraction
        of the first capacities (padded edges cost as much as real ones, so the first structure
        is padded tightly; MD fluctuations beyond it trigger one growth and one recompilation).
    Attributes ``compile_count`` (number of traces of the predict function) and ``capacity``
    ((n_node, n_edge)) are exposed for tests and diagnostics.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: Any,
        fidelity: str | None = None,
        capacity_factor: float = 1.25,
        initial_margin: float = 0.05,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if capacity_factor <= 1.0:
            raise ValueError(f"capacity_factor must be > 1, got {capacity_factor}")
        if initial_margin < 0.0:
            raise ValueError(f"initial_margin must be >= 0, got {initial_margin}")
        self.initial_margin = float(initial_margin)
        self.model = model
        self.fidelity_id = int(model.fidelity_index(fidelity))  # FidelityError lists the names
        self.fidelity = tuple(model.fidelities)[self.fidelity_id]
        self.capacity_factor = float(capacity_factor)
        self.capacity: tuple[int, int] = (0, 0)
        self.compile_count = 0
        self._fidelity_map = {self.fidelity: self.fidelity_id}
        apply_fn = model.apply_fn

        def run(variables, graph, compute_stress: bool):
            self.compile_count += 1  # Python side effect: runs once per trace
            return predict(apply_fn, variables, graph, compute_stress=compute_stress)

        self._run = jax.jit(run, static_argnums=2)
        floats = [x for x in jax.tree.leaves(model.variables) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
        self._dtype = jnp.asarray(floats[0]).dtype if floats else jnp.asarray(0.0).dtype  # the model's precision
        self._known = set(int(z) for z in getattr(model, "species", ()))

    def _grow(self, n_node: int, n_edge: int) -> tuple[int, int]:
        cap_n, cap_e = self.capacity
        factor = 1.0 + self.initial_margin if cap_e == 0 else self.capacity_factor
        if n_node + 1 > cap_n:
            cap_n = max(n_node + 1, math.ceil((n_node + 1) * factor))
        if n_edge > cap_e:
            cap_e = max(n_edge, math.ceil(max(n_edge, 1) * factor))
        self.capacity = (cap_n, cap_e)
        return self.capacity

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.any(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a periodic cell")
        unknown = sorted(set(int(z) for z in atoms.numbers) - self._known) if self._known else []
        if unknown:
            raise ConfigError(f"atomic numbers {unknown} are not known to this model (species {sorted(self._known)})")
        structure = structure_from_atoms(atoms, self.fidelity)
        graph = structures_to_graph([structure], self.model.cutoff, self._fidelity_map)
        n_node, n_edge = self._grow(num_nodes(graph), num_edges(graph))
        graph = pad_graph(graph, n_node, n_edge, 2)
        dtype = self._dtype
        graph = jax.tree.map(
            lambda a: jnp.asarray(a, dtype=dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a),
            graph,
        )
        out = self._run(self.model.variables, graph, periodic)
        n = len(atoms)
        energy = float(np.asarray(out["energy"], dtype=np.float64)[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.asarray(out["forces"], dtype=np.float64)[:n],
        }
        if periodic:
            stress = np.asarray(out["stress"], dtype=np.float64)[0]
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
