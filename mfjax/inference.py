"""Exported models: a portable bundle directory, ``load_model`` and ``TrainedModel``.

Bundle layout (no pickle)::

    model/
      model.json         {"format": "mfjax-model", "format_version": 1, "kind": "potential",
                          "mfjax_version", "model": ModelConfig, "species": [Z...],
                          "fidelities": [names...], "cutoff", "avg_num_neighbors", "training": {...}}
      variables.msgpack  flax.serialization msgpack of {"params": ..., "constants": {"e0", "scale"}}

``kind`` selects the loader (``register_kind``): "potential" is built in; other kinds (e.g. a Δ
model = base + correction) register their own loader returning an object with the same interface.
Bundles are written to a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from mfjax.errors import ConfigError, FidelityError
from mfjax.data.graph import num_edges, num_graphs, num_nodes

FORMAT = "mfjax-model"
FORMAT_VERSION = 1
_LOADERS: dict[str, Callable[[Path, dict, str], Any]] = {}


def register_kind(kind: str, loader: Callable[[Path, dict, str], Any]) -> None:
    """Register ``loader(path, manifest, precision) -> model`` for bundles of this ``kind``."""
    _LOADERS[kind] = loader


def _to_plain(tree):
    return jax.tree.map(lambda x: np.asarray(x), tree)


def write_bundle(path: str | Path, manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> Path:
    """Write ``model.json`` (+ binary files) into ``path`` atomically: temporary dir, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, blob in files.items():
            with open(tmp / name, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
        with open(tmp / "model.json", "w") as handle:
            json.dump(dict(manifest), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def export_model(
    path: str | Path,
    *,
    model_config,
    species: Sequence[int],
    fidelities: Sequence[str],
    cutoff: float,
    avg_num_neighbors: float,
    variables: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Export a trained ``Potential`` (its variables in float32 or as given) as a "potential" bundle."""
    import mfjax
    from mfjax.utils.configtools import to_dict

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "potential", "mfjax_version": mfjax.__version__,
        "model": to_dict(model_config), "species": [int(z) for z in species], "fidelities": list(fidelities),
        "cutoff": float(cutoff), "avg_num_neighbors": float(avg_num_neighbors), "training": _jsonable(training or {}),
    }
    blob = serialization.msgpack_serialize(_to_plain(dict(variables)))
    return write_bundle(path, manifest, {"variables.msgpack": blob})


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: np.asarray(o).tolist()))


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    file = path / "model.json"
    if not file.exists():
        raise ConfigError(f"{path}: not an exported mfjax model (no model.json)")
    with open(file) as handle:
        manifest = json.load(handle)
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{file}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(f"{file}: format version {manifest['format_version']} is newer than this mfjax supports")
    return manifest


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


def cast_variables(variables, dtype):
    return jax.tree.map(
        lambda x: jnp.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else jnp.asarray(x),
        variables,
    )


def load_model(path: str | Path, precision: str = "float32"):
    """Load an exported bundle; dispatches on its ``kind`` (see ``register_kind``)."""
    path = Path(path)
    manifest = read_manifest(path)
    kind = manifest.get("kind", "potential")
    if kind not in _LOADERS and kind == "delta":
        import importlib

        try:  # the strategies package registers its kind on import
            importlib.import_module("mfjax.strategies.delta")
        except ModuleNotFoundError:
            pass
    if kind not in _LOADERS:
        raise ConfigError(f"{path}: unknown model kind {kind!r}; known: {sorted(_LOADERS)}")
    return _LOADERS[kind](path, manifest, precision)


def _load_potential(path: Path, manifest: dict, precision: str):
    from mfjax.nn.config import ModelConfig
    from mfjax.utils.configtools import from_dict

    dtype = check_precision(precision)
    config = from_dict(ModelConfig, manifest["model"], "model")
    with open(path / "variables.msgpack", "rb") as handle:
        variables = serialization.msgpack_restore(handle.read())
    return TrainedModel(
        config=config, species=tuple(manifest["species"]), fidelities=tuple(manifest["fidelities"]),
        cutoff=float(manifest["cutoff"]), avg_num_neighbors=float(manifest["avg_num_neighbors"]),
        variables=cast_variables(variables, dtype), dtype=dtype, metadata=manifest,
    )


def _bucket(n: int, minimum: int) -> int:
    """Next power of two >= n (>= minimum): few distinct padded shapes -> few compilations."""
    return max(minimum, 1 << max(int(n) - 1, 0).bit_length())


class TrainedModel:
    """A loaded potential: ``config, species, fidelities, cutoff, variables`` plus prediction helpers."""

    kind = "potential"

    def __init__(self, *, config, species, fidelities, cutoff, avg_num_neighbors, variables, dtype, metadata=None):
        from mfjax.nn.model import Potential

        self.config, self.species, self.fidelities = config, tuple(species), tuple(fidelities)
        self.cutoff, self.avg_num_neighbors = float(cutoff), float(avg_num_neighbors)
        self.variables, self.dtype, self.metadata = variables, dtype, dict(metadata or {})
        self.module = Potential(config, self.species, self.fidelities, self.avg_num_neighbors)
        self._predict = jax.jit(self._predict_graph)

    def __repr__(self) -> str:
        return f"TrainedModel(kind={self.kind!r}, species={self.species}, fidelities={self.fidelities}, cutoff={self.cutoff})"

    # ---- the model function ------------------------------------------------------------------
    def apply_fn(self, variables, graph, edge_vectors):
        """[N] atomic energies (eV) of a padded graph; the ``Potential.apply`` contract."""
        return self.module.apply(variables, graph, edge_vectors)

    def _predict_graph(self, variables, graph):
        from mfjax import physics

        return physics.predict(self.apply_fn, variables, graph, compute_stress=True)

    def fidelity_index(self, name: str | None = None) -> int:
        """Index of fidelity ``name``; a single-fidelity model accepts None. Unknown -> FidelityError."""
        if name is None:
            if len(self.fidelities) == 1:
                return 0
            raise FidelityError(
                f"this model has {len(self.fidelities)} fidelities; name one of {list(self.fidelities)} (fidelity=...)"
            )
        if name not in self.fidelities:
            raise FidelityError(f"unknown fidelity {name!r}; this model has {list(self.fidelities)}")
        return self.fidelities.index(name)

    # ---- prediction --------------------------------------------------------------------------
    def _graph(self, structures):
        from mfjax.data.batching import pad_graph, structures_to_graph

        from mfjax.training.batches import cast_floats

        graph = structures_to_graph(structures, self.cutoff, {f: i for i, f in enumerate(self.fidelities)})
        padded = pad_graph(graph, _bucket(num_nodes(graph) + 1, 8), _bucket(num_edges(graph), 64),
                           _bucket(num_graphs(graph) + 1, 2))
        return cast_floats(padded, np.dtype(self.dtype)), graph

    def predict(self, atoms_or_list, fidelity: str | None = None, batch_size: int = 32):
        """Energy (eV), forces [n, 3] (eV/Å) and, for periodic cells, stress (Voigt-6, eV/Å^3, ASE
        sign) of one ``ase.Atoms`` (a dict) or a list of them (a list of dicts)."""
        from mfjax.data.structures import structure_from_atoms

        single = not isinstance(atoms_or_list, (list, tuple))
        frames = [atoms_or_list] if single else list(atoms_or_list)
        name = self.fidelities[self.fidelity_index(fidelity)]
        unknown = sorted({int(z) for a in frames for z in a.numbers} - set(self.species))
        if unknown:
            raise ConfigError(f"atomic numbers {unknown} are not known to this model (species {list(self.species)})")
        out = []
        for k in range(0, len(frames), batch_size):
            chunk = [structure_from_atoms(a, name) for a in frames[k : k + batch_size]]
            padded, graph = self._graph(chunk)
            pred = jax.device_get(self._predict(self.variables, padded))
            start = 0
            for g, s in enumerate(chunk):
                n = s.num_atoms
                res = {"energy": float(pred["energy"][g]), "forces": np.asarray(pred["forces"][start : start + n])}
                if s.pbc.all() and abs(np.linalg.det(s.cell)) > 0:
                    st = np.asarray(pred["stress"][g])
                    res["stress"] = st[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
                out.append(res)
                start += n
        return out[0] if single else out

    def evaluate(self, structures, fidelity: str | None = None, max_graphs: int = 16) -> dict:
        """Per-fidelity metrics ({fidelity: {n_structures, energy_mae_mev_atom, ...}}) on labelled
        ``Structure``s (or ``ase.Atoms`` with labels and ``info["fidelity"]`` / ``fidelity``)."""
        from mfjax.data.batching import GraphBatcher, budget_for
        from mfjax.training.evaluation import evaluate_batcher
        from mfjax.training.step import make_eval_step

        structures = [self._as_structure(s, fidelity) for s in structures]
        for s in structures:
            self.fidelity_index(s.fidelity)
        if not structures:
            return {}
        budget = budget_for(structures, self.cutoff, max_graphs)
        batcher = GraphBatcher(structures, self.cutoff, {f: i for i, f in enumerate(self.fidelities)}, budget,
                               shuffle=False)
        eval_step = make_eval_step(self._predict_graph, len(self.fidelities))
        metrics, _ = evaluate_batcher(eval_step, self.variables, batcher, self.fidelities, 1, None,
                                      dtype=np.dtype(self.dtype))
        return metrics

    def _as_structure(self, item, fidelity):
        from mfjax.data.structures import Structure

        if isinstance(item, Structure):
            return item if fidelity is None else _replace_fidelity(item, fidelity)
        from mfjax.data.io import atoms_to_structure

        name = fidelity if fidelity is not None else item.info.get("fidelity")
        if name is None and len(self.fidelities) == 1:
            name = self.fidelities[0]
        structure, _ = atoms_to_structure(item, source="<memory>", frame=0, fidelity=name)
        return structure

    def calculator(self, fidelity: str | None = None, **kwargs):
        """An ASE calculator (``mfjax.md.calculator.MfjaxCalculator``) at ``fidelity``."""
        from mfjax.md.calculator import MfjaxCalculator

        return MfjaxCalculator(self, fidelity=fidelity, **kwargs)


def _replace_fidelity(structure, fidelity):
    from dataclasses import replace

    return replace(structure, fidelity=fidelity)


register_kind("potential", _load_potential)
