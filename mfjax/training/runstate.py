"""Safe resume: a run directory remembers its config and data, and ``--resume`` checks both.

At its first start a run (``mfjax train``) or an ablation (``mfjax ablate``) stores in its directory

* ``config.yaml``: the resolved config (for an ablation with its ``ablation:`` section), written
  once and never overwritten;
* ``data_fingerprint.json``: per data file the number of frames used and a blake2b hash over every
  used frame's species, positions, cell, pbc, fidelity, labels and weights; plus a hash of the split
  assignment, the list of (file, frame index, split) of every frame;
* ``resume_log.jsonl``: append-only, one line per ``--resume`` (UTC time, changed keys [old, new]).

``--resume`` compares the new resolved config and fingerprint with the stored ones. Each changed
key falls in one class (the first matching prefix wins; a key in no list is refused):

==========================  ================================================================
class                       keys
==========================  ================================================================
allowed (logged)            train: ``train.epochs``, ``train.eval_every``,
                            ``train.eval_every_steps``, ``train.checkpoint_every_steps``,
                            ``train.max_nonfinite_steps``, ``train.distributed``, ``output.*``.
                            ablate: the same but ``train.epochs`` (rejected there anyway), and
                            ``ablation.strategies``, ``hf_fractions``, ``seeds``, ``export``,
                            ``quick`` (which rows to add; finished rows stay)
needs --allow-config-change ``train.lr``, ``lr_final``, ``schedule``, ``warmup_steps``,
(logged; ``mfjax train``)   ``optimizer``, ``weight_decay``, ``grad_clip``, ``ema``
refused                     everything else: the data files, frames and labels
                            (``data.frames[FILE]``), the split (``data.split.*``,
                            ``data.split_assignment``), ``data.*``, ``model.*`` (fidelities,
                            cutoff, sizes), ``train.loss.*``, ``train.batch.*``,
                            ``train.seed``, ``best_metric``, ``best_fidelity``,
                            ``compute_stress``, ``e0_alpha``; in an ablation also the stage
                            budgets ``ablation.budget.*``, ``low``/``high``, the optimiser keys
==========================  ================================================================

A refusal is one ``ConfigError`` line naming every changed key with its old and new value.
Starting without ``--resume`` in a directory that already holds a run is refused unless
``overwrite``, which first removes the run's own files (never other files of the directory).
Only process 0 writes; every process checks, and the processes meet (``sync``) around the writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from mfjax.data.dataset import SPLITS, LoadedData
from mfjax.errors import ConfigError
from mfjax.training.sharding import is_main_process, sync_processes

__all__ = ["KeyPolicy", "TRAIN_POLICY", "ABLATE_POLICY", "Change", "fingerprint", "prepare_dir", "check_resume",
           "record_start", "CONFIG", "FINGERPRINT", "RESUME_LOG"]

CONFIG, FINGERPRINT, RESUME_LOG = "config.yaml", "data_fingerprint.json", "resume_log.jsonl"
ALLOWED, OPTIMISER, REFUSED = "allowed", "optimiser", "refused"

_HARMLESS = ("train.eval_every", "train.eval_every_steps", "train.checkpoint_every_steps",
             "train.max_nonfinite_steps", "train.distributed", "output")
_OPTIMISER = tuple(f"train.{k}" for k in ("lr", "lr_final", "schedule", "warmup_steps", "optimizer", "weight_decay",
                                          "grad_clip", "ema"))


@dataclass(frozen=True)
class KeyPolicy:
    """Key prefixes (dotted; ``a.b`` matches ``a.b`` and ``a.b.c``/``a.b[0]``) per class."""

    allowed: tuple[str, ...]
    optimiser: tuple[str, ...] = ()

    def classify(self, key: str) -> str:
        def match(prefix: str) -> bool:
            return key == prefix or key.startswith((prefix + ".", prefix + "["))

        if any(match(p) for p in self.allowed):
            return ALLOWED
        return OPTIMISER if any(match(p) for p in self.optimiser) else REFUSED


TRAIN_POLICY = KeyPolicy(allowed=("train.epochs", *_HARMLESS), optimiser=_OPTIMISER)
# ablation.bootstrap only changes how results.md / summary.json resample the saved per-structure errors
ABLATE_POLICY = KeyPolicy(allowed=(*_HARMLESS, "ablation.strategies", "ablation.hf_fractions", "ablation.seeds",
                                   "ablation.export", "ablation.quick", "ablation.bootstrap"))


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    kind: str

    def __str__(self) -> str:
        return f"{self.key} ({_short(self.old)} -> {_short(self.new)})"


_ABSENT = "<absent>"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and (value == _ABSENT or "blake2b" in value) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain(tree: Any) -> Any:
    """YAML-normalised copy (tuples -> lists) so stored and new configs compare equal."""
    return yaml.safe_load(yaml.safe_dump(tree, sort_keys=False))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values; lists of mappings are indexed (``data.datasets[0].path``)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        out = {f"{prefix}.length": len(tree)}
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: tree}


def _update_arrays(h, *arrays) -> None:
    for a in arrays:
        if a is None:
            h.update(b"none")
        else:
            a = np.ascontiguousarray(np.asarray(a, dtype=np.float64 if np.asarray(a).dtype.kind == "f" else None))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())


def fingerprint(data: LoadedData) -> dict:
    """Per data file: frames used and a hash of their geometry and labels; a hash of the split."""
    frames: dict[str, list] = {}
    assignment = []
    for split in SPLITS:
        for s in data.split(split):
            frames.setdefault(str(s.source), []).append(s)
            assignment.append((str(s.source), int(s.index), split))
    files = {}
    for source in sorted(frames):
        h = hashlib.blake2b(digest_size=16)
        for s in sorted(frames[source], key=lambda t: t.index):
            h.update(f"{s.index}|{s.fidelity}|{s.structure_id}|{s.weight}|".encode())
            _update_arrays(h, s.species, s.positions, s.cell, s.pbc, s.energy, s.forces, s.stress)
        files[source] = {"frames": len(frames[source]), "blake2b": h.hexdigest()}
    split_hash = hashlib.blake2b(json.dumps(sorted(assignment)).encode(), digest_size=16).hexdigest()
    counts = {split: len(data.split(split)) for split in SPLITS}
    return {"files": files, "split_assignment": split_hash, "split_counts": counts,
            "fidelities": list(data.fidelities), "species": [int(z) for z in data.species]}


def _describe_file(entry: dict | None) -> str:
    return _ABSENT if entry is None else f"{entry['frames']} frames, blake2b {entry['blake2b'][:8]}"


def _describe_split(fp: dict) -> str:
    counts = fp.get("split_counts") or {}
    return f"train/valid/test {'/'.join(str(counts.get(k, '?')) for k in SPLITS)}, blake2b {str(fp.get('split_assignment'))[:8]}"


def _fingerprint_changes(old: dict, new: dict) -> list[Change]:
    out = []
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for source in sorted(set(old_files) | set(new_files)):
        a, b = old_files.get(source), new_files.get(source)
        if a != b:
            out.append(Change(f"data.frames[{source}]", _describe_file(a), _describe_file(b), REFUSED))
    if old.get("split_assignment") != new.get("split_assignment"):
        out.append(Change("data.split_assignment", _describe_split(old), _describe_split(new), REFUSED))
    return out


def _run_entries(directory: Path, patterns: Iterable[str]) -> list[str]:
    """The ``patterns`` (globs) matching a file or a non-empty directory in ``directory``."""
    def real(path: Path) -> bool:
        return path.is_file() or (path.is_dir() and any(path.iterdir()))

    return [p for p in patterns if directory.is_dir() and any(real(m) for m in directory.glob(p))]


def prepare_dir(directory: Path, *, resume: bool, overwrite: bool, markers: Iterable[str], owned: Iterable[str],
                what: str = "run directory", stale: Iterable[str] = ()) -> None:
    """Refuse to start (not ``resume``) in ``directory`` while it has any of ``markers``, unless
    ``overwrite``, which removes the ``owned`` entries (glob patterns relative to ``directory``)
    first. A fresh start without markers removes the ``stale`` entries (an unfinished start)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    found = _run_entries(directory, markers)
    if not resume and found and not overwrite:
        raise ConfigError(f"{directory}: this {what} already holds a run ({', '.join(found)}); continue it with "
                          f"--resume, replace it with --overwrite, or choose another --output")
    sync_processes("mfjax-runstate-checked")
    remove = () if resume else (owned if overwrite else stale)
    if remove and is_main_process() and directory.is_dir():
        for pattern in remove:
            for path in sorted(directory.glob(pattern)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    sync_processes("mfjax-runstate-cleared")


def check_resume(directory: Path, config: dict, data_fingerprint: dict, *, policy: KeyPolicy,
                 allow_config_change: bool = False) -> list[Change]:
    """Changes of ``config`` (plain, see :func:`plain`) and the data since the run started; a
    ``ConfigError`` for refused ones (and optimiser ones without ``allow_config_change``)."""
    stored_path, fp_path = directory / CONFIG, directory / FINGERPRINT
    changes = []
    if stored_path.exists():
        try:
            stored = yaml.safe_load(stored_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{stored_path}: the stored config cannot be read ({' '.join(str(exc).split())}); "
                              f"start afresh with --overwrite") from None
        old, new = flatten(stored), flatten(plain(config))
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
            if a != b:
                changes.append(Change(key, a, b, policy.classify(key)))
    if fp_path.exists():
        changes.extend(_fingerprint_changes(json.loads(fp_path.read_text()), data_fingerprint))
    refused = [c for c in changes if c.kind == REFUSED]
    optimiser = [c for c in changes if c.kind == OPTIMISER]
    if refused or (optimiser and not allow_config_change):
        blocked = refused + ([] if allow_config_change else optimiser)
        hint = "start a new run (--output) or pass --overwrite"
        if optimiser and not allow_config_change:
            hint = (f"{', '.join(c.key for c in optimiser)} may change with --allow-config-change"
                    f"{' (the others not)' if refused else ''}; else {hint}")
        raise ConfigError(f"--resume: refused, these changed since the run started in {directory}: "
                          f"{', '.join(str(c) for c in blocked)}; {hint}")
    return changes


def record_start(directory: Path, config: dict, data_fingerprint: dict, *, resume: bool,
                 changes: list[Change] = (), allow_config_change: bool = False) -> list[str]:
    """Process 0 writes ``config.yaml`` and ``data_fingerprint.json`` when absent (never replaces
    them) and, on ``resume``, appends one line to ``resume_log.jsonl``. Returns log lines."""
    lines = []
    if is_main_process():
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / CONFIG).exists():
            if resume:
                lines.append(f"{directory}: no stored {CONFIG} (an older run); storing the current config")
            _write_atomic(directory / CONFIG, yaml.safe_dump(plain(config), sort_keys=False))
        if not (directory / FINGERPRINT).exists():
            _write_atomic(directory / FINGERPRINT, json.dumps(data_fingerprint, indent=2))
        if resume:
            entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "changed": {c.key: [c.old, c.new] for c in changes},
                     "allow_config_change": bool(allow_config_change)}
            with open(directory / RESUME_LOG, "a") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        if changes:
            lines.append(f"--resume with changed settings (recorded in {RESUME_LOG}): "
                         f"{', '.join(str(c) for c in changes)}")
    sync_processes("mfjax-runstate-recorded")
    return lines


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
