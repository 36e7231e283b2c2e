"""``Model``: the one model object (spec + variables) with predict, calculator and export.

Every caller (training, strategies, ``load_model``, MD, the Δ pair) holds a ``Model``. A Δ-learning
model is a ``Model`` too: its network (``spec``) is a Δ potential at one fidelity and ``base`` names
another potential and the fidelity it is evaluated at; the energy is the sum of the two. ``apply_fn``
hides the difference: ``apply_fn(model.variables, graph, edge_vectors) -> [N]`` atomic energies.

An ensemble is a ``Model`` too (``ensemble_size`` K): its variables carry a leading member axis
[K, ...], ``apply_fn`` is the members' mean (``mfjax.model.uncertainty``) and ``predict`` / the ASE
calculator add "energy_std" (per structure) and "forces_std" (per atom) to the mean prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.batching import pad_to_bucket, structures_to_graph
from mfjax.data.graph import cast_floats, with_fidelity
from mfjax.data.neighbors import neighbor_list
from mfjax.data.single import Capacity, single_graph
from mfjax.data.structures import structure_from_atoms
from mfjax.errors import ConfigError
from mfjax.model.bundle import read_manifest, read_variables, write_delta, write_potential
from mfjax.model.calculator import MfjaxCalculator, check_species, model_dtype
from mfjax.model.energy import energy_fn
from mfjax.model.spec import ModelSpec
from mfjax.model.uncertainty import ensemble_apply, ensemble_predict, member_variables, stack_members
from mfjax.physics import predict as physics_predict

__all__ = ["BaseTerm", "Model", "load_model", "check_precision"]

_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


@dataclass(frozen=True)
class BaseTerm:
    """The base potential of a Δ model: its spec and the fidelity it is evaluated at."""

    spec: ModelSpec
    fidelity: str


@dataclass(frozen=True, eq=False)
class Model:
    """A potential in memory.

    spec: the network; variables: {"params", "constants"} (a Δ model: {"base": ..., "delta": ...});
    base: the base potential of a Δ model (None otherwise); metadata: the bundle manifest, if loaded;
    ensemble_size: K for an ensemble of K potentials (variables [K, ...]; None for one model).
    """

    spec: ModelSpec
    variables: Any
    base: BaseTerm | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    ensemble_size: int | None = None

    def __post_init__(self) -> None:
        if self.ensemble_size is not None:
            if self.base is not None:
                raise ConfigError("an ensemble of Δ models is not supported (ensembles are of plain potentials)")
            k = int(self.ensemble_size)
            sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(self.variables)}
            if k < 1 or sizes != {k}:
                raise ConfigError(f"ensemble_size {k}: every variable needs a leading member axis of that size "
                                  f"(found {sorted(map(str, sizes))})")
            object.__setattr__(self, "ensemble_size", k)

    # ---- what every caller reads ---------------------------------------------------------------
    @property
    def species(self) -> tuple[int, ...]:
        return self.spec.species

    @property
    def fidelities(self) -> tuple[str, ...]:
        return self.spec.fidelities

    @property
    def cutoff(self) -> float:
        return self.spec.cutoff

    @property
    def config(self):
        return self.spec.config

    @property
    def avg_num_neighbors(self) -> float:
        return self.spec.avg_num_neighbors

    @property
    def kind(self) -> str:
        return "potential" if self.base is None else "delta"

    @property
    def is_ensemble(self) -> bool:
        return self.ensemble_size is not None

    @property
    def dtype(self):
        return model_dtype(self.variables)

    @property
    def key(self) -> Hashable:
        """What changes the computation: equal keys share compiled steps."""
        if self.is_ensemble:
            return ("ensemble", self.ensemble_size, self.spec.key)
        if self.base is None:
            return ("potential", self.spec.key)
        return ("delta", self.base.spec.key, self.base.spec.fidelity_index(self.base.fidelity), self.spec.key)

    def fidelity_index(self, name: str | None = None) -> int:
        """Index of fidelity ``name`` (``ModelSpec.fidelity_index``)."""
        return self.spec.fidelity_index(name)

    def __repr__(self) -> str:
        ensemble = f", ensemble_size={self.ensemble_size}" if self.is_ensemble else ""
        return f"Model(kind={self.kind!r}{ensemble}, species={self.species}, fidelities={self.fidelities}, cutoff={self.cutoff})"

    # ---- the energy function -------------------------------------------------------------------
    @cached_property
    def apply_fn(self) -> Callable:
        """``apply_fn(variables, graph, edge_vectors [E, 3]) -> [N]`` atomic energies (eV)."""
        own = self.spec.module.apply
        if self.is_ensemble:
            return ensemble_apply(own)
        if self.base is None:
            return own
        base_apply = self.base.spec.module.apply
        base_index = self.base.spec.fidelity_index(self.base.fidelity)

        def apply(variables, graph, vectors):
            e_base = base_apply(variables["base"], with_fidelity(graph, base_index), vectors)
            return e_base + own(variables["delta"], with_fidelity(graph, 0), vectors)

        return apply

    @classmethod
    def delta(cls, base: "Model", base_fidelity: str, delta: "Model", metadata=None) -> "Model":
        """The Δ model ``base`` (at ``base_fidelity``) + ``delta`` (a single-fidelity potential)."""
        if base.base is not None or delta.base is not None:
            raise ConfigError("a Δ model's parts must be plain potentials")
        if base.cutoff != delta.cutoff or base.species != delta.species:
            raise ConfigError(f"Δ model: base and Δ potentials differ in cutoff or species "
                              f"({base.cutoff} vs {delta.cutoff}; {base.species} vs {delta.species})")
        if len(delta.fidelities) != 1:
            raise ConfigError(f"Δ model: the Δ potential must have one fidelity, got {delta.fidelities}")
        base.fidelity_index(base_fidelity)
        return cls(delta.spec, {"base": base.variables, "delta": delta.variables}, BaseTerm(base.spec, base_fidelity),
                   dict(metadata or {}))

    def parts(self) -> tuple["Model", "Model"]:
        """(base, Δ) potentials of a Δ model."""
        if self.base is None:
            raise ValueError("not a Δ model")
        return Model(self.base.spec, self.variables["base"]), Model(self.spec, self.variables["delta"])

    @classmethod
    def ensemble(cls, members: "list[Model]", metadata=None) -> "Model":
        """An ensemble of K plain potentials of one spec (variables stacked on a leading axis)."""
        if not members or any(m.base is not None or m.is_ensemble for m in members):
            raise ConfigError("an ensemble is built from one or more plain (non-Δ, non-ensemble) potentials")
        if any(m.spec != members[0].spec for m in members):
            raise ConfigError("ensemble members must share one spec (architecture, species, fidelities)")
        variables = stack_members([jax.device_get(m.variables) for m in members])
        return cls(members[0].spec, variables, metadata=dict(metadata or {}), ensemble_size=len(members))

    def members(self) -> "list[Model]":
        """The K member potentials of an ensemble ([self] for one model)."""
        if not self.is_ensemble:
            return [self]
        return [Model(self.spec, member_variables(self.variables, k)) for k in range(self.ensemble_size)]

    def replace(self, **changes) -> "Model":
        return replace(self, **changes)

    def astype(self, dtype) -> "Model":
        """The same model with float variables in ``dtype``."""
        cast = jax.tree.map(
            lambda x: jnp.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else jnp.asarray(x),
            self.variables)
        return replace(self, variables=cast)

    # ---- prediction ----------------------------------------------------------------------------
    @cached_property
    def _predict(self) -> Callable:
        if self.is_ensemble:
            member = self.spec.module.apply
            return jax.jit(lambda variables, graph: ensemble_predict(member, variables, graph, compute_stress=True))
        apply_fn = self.apply_fn
        return jax.jit(lambda variables, graph: physics_predict(apply_fn, variables, graph, compute_stress=True))

    @cached_property
    def _device_variables(self) -> Any:
        """The variables on the device, put there once (not copied again on every ``predict``)."""
        return jax.device_put(self.variables)

    @cached_property
    def _capacity(self) -> Capacity:
        return Capacity()

    def predict(self, atoms_or_list, fidelity: str | None = None, batch_size: int = 32):
        """Energy (eV), forces [n, 3] (eV/Å) and, for periodic cells, stress (Voigt-6, eV/Å^3, ASE
        sign) of one ``ase.Atoms`` (a dict) or a list of them (a list of dicts). An ensemble gives
        the members' mean plus "energy_std" (eV) and "forces_std" [n] (eV/Å, per atom)."""
        single = not isinstance(atoms_or_list, (list, tuple))
        frames = [atoms_or_list] if single else list(atoms_or_list)
        index = self.fidelity_index(fidelity)
        for k, atoms in enumerate(frames):
            check_species(atoms.numbers, self.species, "the structure" if single else f"structure {k}")
        if single:
            return self._predict_one(frames[0], index)
        out = []
        for k in range(0, len(frames), batch_size):
            out.extend(self._predict_batch(frames[k : k + batch_size], index))
        return out

    def _results(self, structure, pred: dict, graph: int, atoms: slice) -> dict:
        res = {"energy": float(pred["energy"][graph]), "forces": np.asarray(pred["forces"][atoms], np.float64)}
        if structure.pbc.all() and abs(np.linalg.det(structure.cell)) > 0:
            res["stress"] = np.asarray(pred["stress"][graph], np.float64)[_VOIGT]
        if "energy_std" in pred:
            res["energy_std"] = float(pred["energy_std"][graph])
            res["forces_std"] = np.asarray(pred["forces_std"][atoms], np.float64)
        return res

    def _predict_one(self, atoms, index: int) -> dict:
        s = structure_from_atoms(atoms, self.fidelities[index])
        nl = neighbor_list(s.positions, s.cell, s.pbc, self.cutoff)
        n_node, n_edge = self._capacity.fit(s.num_atoms, len(nl.senders))
        dtype = np.dtype(self.dtype)
        graph = single_graph(s.positions.astype(dtype), s.species, nl.senders, nl.receivers,
                             shifts=nl.shifts.astype(dtype), cell=s.cell.astype(dtype), pbc=s.pbc, fidelity=index,
                             n_node=n_node, n_edge=n_edge)
        pred = jax.device_get(self._predict(self._device_variables, graph))
        return self._results(s, pred, 0, slice(0, s.num_atoms))

    def _predict_batch(self, frames, index: int) -> list[dict]:
        chunk = [structure_from_atoms(a, self.fidelities[index]) for a in frames]
        graph = structures_to_graph(chunk, self.cutoff, {self.fidelities[index]: index})
        padded = cast_floats(pad_to_bucket(graph), np.dtype(self.dtype))
        pred = jax.device_get(self._predict(self._device_variables, padded))
        out, start = [], 0
        for g, s in enumerate(chunk):
            n = s.num_atoms
            out.append(self._results(s, pred, g, slice(start, start + n)))
            start += n
        return out

    def energy_fn(self, atoms, fidelity: str | None = None, **kwargs) -> Callable:
        """The energy (eV) of ``atoms`` as a pure JAX function of its positions [N, 3], for
        ``jax.grad`` / ``jax.jvp`` / ``jax.hessian`` (``mfjax.model.energy.energy_fn``: topology and
        cell fixed, valid while atoms move less than ``skin / 2``)."""
        return energy_fn(self, atoms, fidelity, **kwargs)

    def calculator(self, fidelity: str | None = None, **kwargs) -> MfjaxCalculator:
        """An ASE calculator at ``fidelity`` (``mfjax.model.calculator.MfjaxCalculator``)."""
        return MfjaxCalculator(self, fidelity=fidelity, **kwargs)

    # ---- export --------------------------------------------------------------------------------
    def export(self, path: str | Path, training: Mapping[str, Any] | None = None) -> Path:
        """Write the model as a bundle directory (``mfjax.model.bundle``), atomically; variables are
        stored as they are (float32 for a training run)."""
        host = jax.device_get(self.variables)
        if self.is_ensemble:
            return write_potential(path, {**self.spec.to_dict(), "ensemble_size": self.ensemble_size}, host, training)
        if self.base is None:
            return write_potential(path, self.spec.to_dict(), host, training)
        return write_delta(path, (self.base.spec.to_dict(), host["base"]), self.base.fidelity,
                                  (self.spec.to_dict(), host["delta"]), training)


def check_precision(precision: str):
    """The JAX dtype of ``precision``; float64 needs x64 enabled by the caller (never flipped here)."""
    if precision == "float32":
        return jnp.float32
    if precision == "float64":
        if not jax.config.jax_enable_x64:
            raise ConfigError(
                "precision='float64' needs 64-bit JAX: run jax.config.update('jax_enable_x64', True) "
                "(or set JAX_ENABLE_X64=1) before loading the model; mfjax never changes it"
            )
        return jnp.float64
    raise ConfigError(f"precision must be 'float32' or 'float64', got {precision!r}")


def _load_potential(path: Path, manifest: dict, dtype) -> Model:
    try:
        spec = ModelSpec.from_dict(manifest)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path / 'model.json'}: incomplete model manifest (missing {exc})") from None
    size = manifest.get("ensemble_size")
    return Model(spec, read_variables(path), metadata=manifest,
                 ensemble_size=None if size is None else int(size)).astype(dtype)


def load_model(path: str | Path, precision: str = "float32") -> Model:
    """Load a bundle written by ``Model.export`` (kind "potential" or "delta")."""
    path = Path(path)
    dtype = check_precision(precision)
    manifest = read_manifest(path)
    if manifest.get("kind", "potential") == "potential":
        return _load_potential(path, manifest, dtype)
    parts = {}
    for name in ("base", "delta"):
        sub = path / manifest[name]["path"]
        parts[name] = _load_potential(sub, read_manifest(sub), dtype)
    return Model.delta(parts["base"], manifest["base"]["fidelity"], parts["delta"], metadata=manifest)
