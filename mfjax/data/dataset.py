"""All datasets of a config -> validated, accounted train/valid/test structures.

``load_data`` reads every ``DatasetConfig`` with ``io.read_structures`` (so every check of
``validation`` runs), fixes the fidelity order and the species, splits the frames and reports
per-dataset counts, label coverage and warnings (``report.DataReport``; totals add up).

Split: a dataset with a ``role`` goes wholly to that split. Otherwise frames with a
``structure_id`` are assigned by a seeded hash of the id (u < test -> test, u < test + valid ->
valid), so the same geometry labelled at several fidelities lands in the same split in every
file; frames without an id are split by a permutation seeded with ``split.seed`` (exact counts;
two files with the same frame order get the same split).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from mfjax.config import DataConfig, DatasetConfig
from mfjax.data.fidelity import check_distinct
from mfjax.data.io import read_structures
from mfjax.data.report import DataReport, DatasetReport, warn_frames
from mfjax.data.structures import Structure
from mfjax.data.validation import find_duplicates
from mfjax.errors import DataError

__all__ = ["LoadedData", "load_data", "load_dataset", "split_assignment", "match_pairs"]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class LoadedData:
    """Validated structures of a run.

    train/valid/test: the splits; fidelities: names in index order (first seen unless given);
    species: sorted atomic numbers (unless given); report: the frame accounting.
    """

    train: list[Structure]
    valid: list[Structure]
    test: list[Structure]
    fidelities: tuple[str, ...]
    species: tuple[int, ...]
    report: DataReport

    @property
    def fidelity_index(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.fidelities)}

    def split(self, name: str) -> list[Structure]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def pairs(self, low: str, high: str, split: str = "train") -> list[tuple[Structure, Structure]]:
        """(low-fidelity, high-fidelity) frames of ``split`` sharing a structure_id (Δ-learning)."""
        return match_pairs(self.split(split), low, high)


def _hash_unit(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def split_assignment(structures: Sequence[Structure], valid: float, test: float, seed: int) -> np.ndarray:
    """[n] split index per frame (0 train, 1 valid, 2 test); deterministic in ``seed``."""
    out = np.zeros(len(structures), dtype=np.int64)
    with_id = [k for k, s in enumerate(structures) if s.structure_id is not None]
    for k in with_id:
        u = _hash_unit(seed, structures[k].structure_id)
        out[k] = 2 if u < test else (1 if u < test + valid else 0)
    rest = np.array([k for k, s in enumerate(structures) if s.structure_id is None], dtype=np.int64)
    if rest.size:
        order = rest[np.random.default_rng(seed).permutation(rest.size)]
        n_test = int(round(test * rest.size))
        n_valid = int(round(valid * rest.size))
        out[order[:n_test]] = 2
        out[order[n_test : n_test + n_valid]] = 1
    return out


def load_dataset(
    d: DatasetConfig,
    *,
    cutoff: float | None,
    species: Sequence[int] | None = None,
    fidelities: Sequence[str] | None = None,
    on_error: Literal["raise", "exclude"] = "raise",
) -> tuple[list[Structure], DatasetReport]:
    """One dataset's usable structures and accounting; an empty result is a ``DataError``."""
    report = DatasetReport(source=d.path)
    structures = read_structures(
        d.path, fidelity=d.fidelity, keys=d.keys, index=d.index, format=d.format,
        weight=(d.weight.energy, d.weight.forces, d.weight.stress), species=species,
        fidelities=fidelities, cutoff=cutoff, require_labels=True, on_error=on_error, report=report,
    )
    if not structures:
        reasons = "; ".join(f"{n} {r}" for r, n in report.excluded.items()) or "no frames selected"
        raise DataError(f"empty dataset: {report.frames_read} frame(s) read, none usable ({reasons})", source=d.path)
    return structures, report


def load_data(
    data_cfg: DataConfig,
    species: Sequence[int] | None = None,
    fidelities: Sequence[str] | None = None,
    *,
    on_error: Literal["raise", "exclude"] = "raise",
) -> LoadedData:
    """Read, validate, split and account every dataset of ``data_cfg``.

    species: atomic numbers the model knows (others are a ``DataError``); None = all found.
    fidelities: fidelity names the model knows, in index order; None = first-seen order.
    on_error: "raise" at the first bad frame, or "exclude" bad frames and account for them.
    """
    if not data_cfg.datasets:
        raise DataError("empty dataset list: give at least one file in data.datasets")
    if fidelities is None and data_cfg.fidelities is not None:
        fidelities = check_distinct(data_cfg.fidelities, "data.fidelities")
    report = DataReport()
    splits: dict[str, list[Structure]] = {name: [] for name in SPLITS}
    seen_fidelities: dict[str, None] = {}
    seen_species: set[int] = set()
    for d in data_cfg.datasets:
        structures, rep = load_dataset(d, cutoff=data_cfg.cutoff, species=species, fidelities=fidelities, on_error=on_error)
        report.datasets.append(rep)
        for s in structures:
            if s.fidelity not in seen_fidelities:
                check_distinct([*seen_fidelities, s.fidelity], f"{s.source} (frame {s.index}, field 'fidelity')")
            seen_fidelities.setdefault(s.fidelity, None)
            seen_species.update(int(z) for z in s.species)
        if d.role is not None:
            assignment = np.full(len(structures), SPLITS.index(d.role))
        else:
            assignment = split_assignment(structures, data_cfg.split.valid, data_cfg.split.test, data_cfg.split.seed)
        for s, a in zip(structures, assignment):
            splits[SPLITS[a]].append(s)
            rep.split[SPLITS[a]] += 1
    report.split_counts = split_counts(splits)
    report.warnings.extend(small_split_warnings(report.split_counts, data_cfg))
    for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
        dups = find_duplicates(splits[a], splits[b])
        if dups:
            x, y = dups[0]
            report.warnings.append(warn_frames(
                f"{len(dups)} frame(s) of the {b} split duplicate {a} frames (same fidelity and geometry), "
                f"e.g. {y.where} = {x.where}: {b} metrics will be optimistic", y.source, [t.index for _, t in dups], "positions",
            ))
    if not report.totals_ok():  # a bug, not a user error
        raise RuntimeError(f"frame accounting does not add up: {report.to_dict()}")
    return LoadedData(
        train=splits["train"], valid=splits["valid"], test=splits["test"],
        fidelities=tuple(fidelities) if fidelities is not None else tuple(seen_fidelities),
        species=tuple(sorted(int(z) for z in species)) if species is not None else tuple(sorted(seen_species)),
        report=report,
    )


#: Fewer validation (test) frames than this for a fidelity give a warning: the best model is then
#: selected (judged) on a handful of frames.
MIN_SPLIT_FRAMES = 10


def split_counts(splits: dict[str, list[Structure]]) -> dict[str, dict[str, int]]:
    """{fidelity: {split: number of frames}} in first-seen fidelity order."""
    out: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        for s in splits[name]:
            out.setdefault(s.fidelity, {k: 0 for k in SPLITS})[name] += 1
    return out


def small_split_warnings(counts: dict[str, dict[str, int]], data_cfg: DataConfig) -> list[str]:
    """Warnings (also emitted as ``DataWarning``) for fidelities with < MIN_SPLIT_FRAMES validation or
    test frames, saying how to fix it."""
    out = []
    for fidelity, c in counts.items():
        for split, fraction in (("valid", data_cfg.split.valid), ("test", data_cfg.split.test)):
            if c[split] < MIN_SPLIT_FRAMES and fraction > 0:
                out.append(warn_frames(
                    f"fidelity {fidelity!r} has only {c[split]} {split} frame(s) (train {c['train']}, valid "
                    f"{c['valid']}, test {c['test']}): {split} metrics of this fidelity rest on a handful of frames. "
                    f"Give a {split} file with `role: {split}` in data.datasets, or raise data.split.{split}",
                    None,
                ))
    return out


def match_pairs(structures: Sequence[Structure], low: str, high: str, atol: float = 1e-4) -> list[tuple[Structure, Structure]]:
    """(low, high) frames with the same structure_id, in the order of the high-fidelity frames.

    The two frames must hold the same atoms at the same positions (within ``atol`` Å), else
    ``DataError`` naming both.
    """
    lows = {s.structure_id: s for s in structures if s.fidelity == low and s.structure_id is not None}
    out = []
    for h in structures:
        if h.fidelity != high or h.structure_id not in lows:
            continue
        l = lows[h.structure_id]
        same = (
            l.num_atoms == h.num_atoms and np.array_equal(l.species, h.species)
            and np.allclose(l.positions, h.positions, atol=atol) and np.allclose(l.cell, h.cell, atol=atol)
        )
        if not same:
            raise DataError(
                f"structure_id {h.structure_id!r} names a different geometry at {l.where} ({low})",
                source=h.source, frame=h.index, field="structure_id",
            )
        out.append((l, h))
    return out
