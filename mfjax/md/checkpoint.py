"""Crash-safe MD: the checkpoint written next to the trajectory and the repair of the outputs on resume.

A checkpoint (``out.extxyz.ckpt.npz``) is written atomically (temporary file, fsync, ``os.replace``)
right after a saved frame: the step, the engine's state (arrays + JSON-able ``meta``: the jax-md
state pytree incl. the thermostat chain and RNG key, or the ASE atoms + integrator state + RNG
state), the reporter's ``e_tot0``, the stability verdict so far, how many trajectory frames and log
lines had been written and the byte sizes of the (flushed, fsynced) trajectory and log at that
moment, and the run's identity (the config keys that must not change, a hash of the structure and
of the model). On resume the trajectory and the log are cut back to those sizes (frames written
after the checkpoint, or a partly written last frame, are dropped) and the run continues from the
stored state. The file is a plain ``.npz`` (no pickle): arrays ``state/<name>`` plus a JSON ``header``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase
import jax
import numpy as np
from ase.io import Trajectory, read

from mfjax.errors import ConfigError
from mfjax.md.config import MDConfig

__all__ = ["Checkpoint", "check_identity", "checkpoint_path", "load_checkpoint", "prepare_outputs", "repair_outputs",
           "run_identity", "save_checkpoint"]

IDENTITY_KEYS = ("ensemble", "timestep", "fidelity", "temperature", "pressure", "friction", "seed", "interval",
                 "engine", "precision")  # + "structure" and "model" (hashes)
FORMAT = 1


@dataclass
class Checkpoint:
    """The state of an MD run right after its frame at ``step`` was written (see the module docstring).

    frames / log_lines: trajectory frames and log data lines written so far; traj_bytes / log_bytes:
    file sizes at that moment (log_bytes -1 = no log); arrays / meta: the engine's state.
    """

    step: int
    frames: int
    log_lines: int
    traj_bytes: int
    log_bytes: int
    e_tot0: float | None
    identity: dict[str, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    failure: str | None = None
    failure_time_fs: float | None = None
    failure_step: int | None = None


def checkpoint_path(traj: str | Path) -> Path:
    """Where the checkpoint of trajectory ``traj`` lives: ``<traj>.ckpt.npz``."""
    traj = Path(traj)
    return traj.with_name(traj.name + ".ckpt.npz")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path``'s directory durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically: a crash leaves either the old or the new checkpoint."""
    path = Path(path)
    header = {k: v for k, v in asdict(ckpt).items() if k != "arrays"}
    header["format"] = FORMAT
    payload = {f"state/{k}": np.asarray(v) for k, v in ckpt.arrays.items()}
    payload["header"] = np.asarray(json.dumps(header))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` (ConfigError naming the file when it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"][()]))
            arrays = {k.removeprefix("state/"): np.array(data[k]) for k in data.files if k.startswith("state/")}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"MD checkpoint {str(path)!r} cannot be read ({exc}); use --overwrite to start again")
    if header.pop("format", None) != FORMAT:
        raise ConfigError(f"MD checkpoint {str(path)!r} has an unknown format; use --overwrite to start again")
    return Checkpoint(arrays=arrays, **header)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run_identity(cfg: MDConfig, model, atoms: ase.Atoms) -> dict[str, str]:
    """What must not change between a checkpoint and its resume: ``IDENTITY_KEYS`` of ``cfg``, the
    initial structure (numbers, positions, cell, pbc) and the model (species, fidelities, cutoff, variables)."""
    identity = {key: repr(getattr(cfg, key)) for key in IDENTITY_KEYS}
    identity["structure"] = _digest(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    leaves = jax.tree_util.tree_leaves(jax.device_get(model.variables))
    identity["model"] = _digest(np.asarray(model.species), np.asarray(float(model.cutoff)), *leaves) + \
        f" ({','.join(model.fidelities)})"
    return identity


def check_identity(ckpt: Checkpoint, identity: dict[str, str], path: Path) -> None:
    """ConfigError (one line) naming every key whose value differs from the checkpoint's."""
    changed = [k for k in identity if ckpt.identity.get(k) != identity[k]]
    if changed:
        detail = ", ".join(f"{k} ({ckpt.identity.get(k)} -> {identity[k]})" for k in changed)
        raise ConfigError(f"md.resume: {path} was written with a different {detail}; resume with the "
                          f"checkpoint's values or start again with --overwrite")


def _truncate(path: Path, size: int, what: str) -> None:
    actual = path.stat().st_size if path.exists() else -1
    if actual < size:
        raise ConfigError(f"md.resume: {what} {str(path)!r} has {max(actual, 0)} bytes, fewer than the "
                          f"{size} its checkpoint recorded; it cannot be resumed (use --overwrite)")
    if actual > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())


def _cut_ase_trajectory(path: Path, n: int) -> None:
    """Keep the first ``n`` frames of an ASE .traj file (rewritten atomically when it holds more)."""
    try:
        with Trajectory(path) as reader:
            count = len(reader)
            frames = [reader[i] for i in range(min(n, count))]
    except Exception as exc:  # noqa: BLE001 (a corrupt ULM file raises several kinds)
        raise ConfigError(f"md.resume: trajectory {str(path)!r} cannot be read ({exc})")
    if count < n:
        raise ConfigError(f"md.resume: trajectory {str(path)!r} has {count} frames, fewer than the {n} "
                          "its checkpoint recorded; it cannot be resumed (use --overwrite)")
    if count > n:
        tmp = path.with_name(path.name + ".tmp.traj")
        with Trajectory(tmp, "w") as writer:
            for atoms in frames:
                writer.write(atoms)
        os.replace(tmp, path)


def repair_outputs(ckpt: Checkpoint, traj: Path, log: Path | None) -> list[ase.Atoms]:
    """Cut the trajectory and the log back to what ``ckpt`` recorded; returns the trajectory's frames."""
    if traj.suffix == ".traj":
        _cut_ase_trajectory(traj, ckpt.frames)
    else:
        _truncate(traj, ckpt.traj_bytes, "trajectory")
    if log is not None:
        if ckpt.log_bytes < 0:
            raise ConfigError(f"md.log: the checkpointed run wrote no log, so {str(log)!r} cannot be resumed; "
                              "drop md.log or start again with --overwrite")
        _truncate(log, ckpt.log_bytes, "log")
    frames = read(traj, ":", format="traj" if traj.suffix == ".traj" else "extxyz") if ckpt.frames else []
    if len(frames) != ckpt.frames:
        raise ConfigError(f"md.resume: trajectory {str(traj)!r} holds {len(frames)} frames where its checkpoint "
                          f"recorded {ckpt.frames}; it cannot be resumed (use --overwrite)")
    return frames


def prepare_outputs(cfg: MDConfig, identity: dict[str, str]) -> tuple[Checkpoint | None, list[ase.Atoms]]:
    """Before a run: refuse to overwrite ``cfg.traj`` unless ``cfg.overwrite``; with ``cfg.resume`` load
    its checkpoint, check it against ``identity`` and ``cfg.steps`` and repair the outputs.

    Returns (the checkpoint to resume from or None for a fresh run, the frames already written).
    """
    if cfg.traj is None:
        return None, []
    traj = Path(cfg.traj)
    path = checkpoint_path(traj)
    if cfg.resume and path.exists():
        ckpt = load_checkpoint(path)
        check_identity(ckpt, identity, path)
        if cfg.steps < ckpt.step:
            raise ConfigError(f"md.steps: {cfg.steps} is fewer than the {ckpt.step} steps already in {path}")
        return ckpt, repair_outputs(ckpt, traj, Path(cfg.log) if cfg.log else None)
    if traj.exists() and not cfg.overwrite:
        if cfg.resume:
            raise ConfigError(f"md.resume: {str(traj)!r} has no checkpoint {path.name} to resume from; "
                              "start again with --overwrite")
        raise ConfigError(f"md.traj: {str(traj)!r} exists; continue it with --resume or replace it with --overwrite")
    path.unlink(missing_ok=True)  # a stale checkpoint must not pair with the new trajectory
    return None, []
