"""Model bundles on disk: a portable directory per model, written atomically (no pickle).

Layout of a "potential" bundle::

    model/
      model.json         {"format": "mfjax-model", "format_version": 1, "kind": "potential",
                          "mfjax_version", "model": ModelConfig, "species": [Z...],
                          "fidelities": [names...], "cutoff", "avg_num_neighbors", "training": {...}}
      variables.msgpack  flax.serialization msgpack of {"params": ..., "constants": {"e0", "scale"}}

An ensemble of K potentials is a "potential" bundle whose model.json adds ``"ensemble_size": K``
and whose every variable has a leading member axis [K, ...] (one file, one manifest).

A "delta" bundle (Δ-learning: a base potential at one of its fidelities plus a Δ potential) is a
``model.json`` of kind "delta" naming two "potential" bundles ``base/`` and ``delta/`` beside it.
Bundles are written to a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import serialization

from mfjax._version import __version__
from mfjax.errors import ConfigError

__all__ = ["FORMAT", "FORMAT_VERSION", "atomic_directory", "write_potential", "write_delta", "read_manifest",
           "read_variables"]

FORMAT = "mfjax-model"
FORMAT_VERSION = 1


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: np.asarray(o).tolist()))


def _write_file(path: Path, blob: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_directory(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create directory ``path`` atomically: ``fill(tmp)`` writes into a temporary sibling, which is
    then renamed into place (an existing ``path`` is replaced only after ``fill`` succeeded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
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


def _manifest(kind: str, body: Mapping[str, Any], training: Mapping[str, Any] | None) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "mfjax_version": __version__,
            **body, "training": _jsonable(training or {})}


def _fill_potential(directory: Path, spec_dict: Mapping[str, Any], variables: Any, training) -> None:
    blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, dict(variables)))
    _write_file(directory / "variables.msgpack", blob)
    _write_file(directory / "model.json", json.dumps(_manifest("potential", spec_dict, training), indent=2).encode())


def write_potential(path: str | Path, spec_dict: Mapping[str, Any], variables: Any,
                    training: Mapping[str, Any] | None = None) -> Path:
    """A "potential" bundle from ``ModelSpec.to_dict()`` and host variables."""
    return atomic_directory(path, lambda tmp: _fill_potential(tmp, spec_dict, variables, training))


def write_delta(path: str | Path, base: tuple[Mapping, Any], base_fidelity: str, delta: tuple[Mapping, Any],
                training: Mapping[str, Any] | None = None) -> Path:
    """A "delta" bundle: ``base`` and ``delta`` are (spec dict, variables) of the two potentials."""

    def fill(tmp: Path) -> None:
        for name, (spec_dict, variables) in (("base", base), ("delta", delta)):
            (tmp / name).mkdir()
            _fill_potential(tmp / name, spec_dict, variables, None)
        body = {"species": list(base[0]["species"]), "fidelities": list(delta[0]["fidelities"]),
                "cutoff": float(base[0]["cutoff"]), "base": {"path": "base", "fidelity": base_fidelity},
                "delta": {"path": "delta", "fidelity": delta[0]["fidelities"][0]}}
        _write_file(tmp / "model.json", json.dumps(_manifest("delta", body, training), indent=2).encode())

    return atomic_directory(path, fill)


def read_manifest(path: str | Path) -> dict:
    """The checked ``model.json`` of a bundle; ConfigError for anything that is not one."""
    path = Path(path)
    file = path / "model.json"
    if not file.exists():
        raise ConfigError(f"{path}: not an exported mfjax model (no model.json)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: unreadable model manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{file}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} "
                          f"is not {FORMAT!r}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(f"{file}: format version {manifest['format_version']} is newer than this mfjax supports")
    if manifest.get("kind", "potential") not in ("potential", "delta"):
        raise ConfigError(f"{file}: unknown model kind {manifest.get('kind')!r}; known: ['delta', 'potential']")
    return manifest


def read_variables(path: str | Path) -> Any:
    """The msgpack variables of a "potential" bundle."""
    file = Path(path) / "variables.msgpack"
    try:
        return serialization.msgpack_restore(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: unreadable model variables ({exc})") from None
