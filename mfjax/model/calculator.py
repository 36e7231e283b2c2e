"""ASE calculator for a model at one fidelity.

The neighbour list is built on the host (``mfjax.data.neighbors``) for every call and the
structure becomes a padded graph through the one single-structure builder
(``mfjax.data.single``) with capacities that only grow, so an MD run or a relaxation reuses one
compiled ``predict`` instead of recompiling each step.

For an ensemble model (``model.ensemble_size``) the results are the members' mean and also hold
``energy_std`` (eV) and ``forces_std`` [n] (eV/Å per atom; ``mfjax.model.uncertainty``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mfjax.data.neighbors import neighbor_list
from mfjax.data.single import Capacity, single_graph
from mfjax.errors import ConfigError
from mfjax.model.uncertainty import ensemble_predict
from mfjax.physics import predict

__all__ = ["MfjaxCalculator", "check_species"]


def check_species(numbers, species, where: str = "the structure") -> None:
    """ConfigError naming the elements of ``numbers`` that ``species`` (a model's) does not know."""
    unknown = sorted(set(int(z) for z in np.asarray(numbers).ravel()) - set(int(z) for z in species))
    if unknown:
        symbols = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
        known = ", ".join(chemical_symbols[int(z)] for z in sorted(species))
        raise ConfigError(f"{where}: element(s) {symbols} not known to this model (it knows {known})")


def model_dtype(variables) -> Any:
    """The float dtype of a model's variables (its precision)."""
    floats = [x for x in jax.tree.leaves(variables) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.asarray(floats[0]).dtype if floats else jnp.asarray(0.0).dtype


class MfjaxCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces and (periodic cells only) stress.

    model: a ``mfjax.model.Model`` (or anything with ``apply_fn``, ``variables``, ``species``,
        ``fidelities``, ``cutoff``, ``fidelity_index``). fidelity: a name from ``model.fidelities``
        (may be omitted for a single-fidelity model; otherwise ``FidelityError`` lists the names).
    capacity_factor, initial_margin: the padding policy (``mfjax.data.single.Capacity``).
    ``compile_count`` (traces of the predict function) and ``capacity`` ((n_node, n_edge)) are
    exposed for tests and diagnostics.

    Stress only when it is used: a periodic structure gets E+F+S (one jitted call) until a result's
    stress goes unread — the next calculation was asked for without stress, as ASE's MD
    integrators and position-only optimisers ask for forces only; from then on the calculator
    runs the E+F function (no strain derivative, ~6 % less CPU time at 64 atoms,
    benchmarks/README.md) until stress is asked for again. Each padding capacity compiles at most
    once per mode (E+F+S, E+F); the values of E and F do not depend on the mode.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std"]

    def __init__(self, model: Any, fidelity: str | None = None, capacity_factor: float = 1.25,
                 initial_margin: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.fidelity_id = int(model.fidelity_index(fidelity))  # FidelityError lists the names
        self.fidelity = tuple(model.fidelities)[self.fidelity_id]
        self._capacity = Capacity(margin=initial_margin, factor=capacity_factor)
        self.compile_count = 0
        apply_fn = model.apply_fn
        self.ensemble = getattr(model, "ensemble_size", None) is not None
        member_apply = model.spec.module.apply if self.ensemble else None

        def run(variables, graph, compute_stress: bool):
            self.compile_count += 1  # Python side effect: runs once per trace
            if member_apply is not None:
                return ensemble_predict(member_apply, variables, graph, compute_stress=compute_stress)
            return predict(apply_fn, variables, graph, compute_stress=compute_stress)

        self._run = jax.jit(run, static_argnums=2)
        self._dtype = model_dtype(model.variables)
        # on the device once: a model fresh from training holds host (numpy) weights, which jit would
        # otherwise copy to the device on every call (every MD step)
        self._variables = jax.device_put(model.variables)
        self._stress_mode = True  # compute stress for periodic cells (see the class docstring)
        self._stress_unread = False  # the last results hold a stress nobody has read yet

    def get_property(self, name, atoms=None, allow_calculation=True):
        value = super().get_property(name, atoms, allow_calculation)
        if name == "stress":
            self._stress_unread = False
        return value

    @property
    def capacity(self) -> tuple[int, int]:
        return (self._capacity.n_node, self._capacity.n_edge)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.any(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a periodic cell")
        check_species(atoms.numbers, self.model.species)
        pbc = np.asarray(atoms.pbc, bool)
        cell = np.asarray(atoms.cell.array, np.float64) if pbc.any() else np.zeros((3, 3))
        positions = np.asarray(atoms.positions, np.float64)
        nl = neighbor_list(positions, cell, pbc, self.model.cutoff)
        n_node, n_edge = self._capacity.fit(len(atoms), len(nl.senders))
        dtype = np.dtype(self._dtype)
        graph = single_graph(positions.astype(dtype), atoms.numbers, nl.senders, nl.receivers,
                             shifts=nl.shifts.astype(dtype), cell=cell.astype(dtype), pbc=pbc,
                             fidelity=self.fidelity_id, n_node=n_node, n_edge=n_edge)
        if "stress" in properties:
            self._stress_mode = True
        elif self._stress_unread:  # the previous stress was never read: the caller wants forces only
            self._stress_mode = False
        compute_stress = periodic and self._stress_mode
        out = self._run(self._variables, graph, compute_stress)
        self._stress_unread = compute_stress
        n = len(atoms)
        energy = float(np.asarray(out["energy"], dtype=np.float64)[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.asarray(out["forces"], dtype=np.float64)[:n]}
        if self.ensemble:
            self.results["energy_std"] = float(np.asarray(out["energy_std"], dtype=np.float64)[0])
            self.results["forces_std"] = np.asarray(out["forces_std"], dtype=np.float64)[:n]
        if compute_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(out["stress"], dtype=np.float64)[0])
