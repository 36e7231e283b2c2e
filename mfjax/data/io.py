"""Read any ASE-readable file (extxyz, ASE db, ...) into validated ``Structure`` objects.

Labels come from the ASE calculator results under the key name first, else from
``atoms.info[keys.energy]``, ``atoms.arrays[keys.forces]``, ``atoms.info[keys.stress]`` (Voigt-6 or
3x3, ASE sign). An absent label is None (masked), never zero. The fidelity is given per dataset or
read per frame from ``atoms.info[keys.fidelity]``. Every frame read is accounted for in an optional
``DatasetReport`` (used, or excluded with the reason).
"""

from __future__ import annotations

import re
from typing import Any, Collection, Iterator, Literal, Sequence

import numpy as np
from ase.io.extxyz import key_val_str_to_dict

from mfjax.config import LabelKeys
from mfjax.data.report import DatasetReport, warn_frames
from mfjax.data.structures import Structure
from mfjax.data import validation as V
from mfjax.errors import DataError

__all__ = ["read_structures", "atoms_to_structure", "iter_frames"]

_DB_FORMATS = ("db", "json", "postgresql")


def _frame_numbers(index: str | int) -> tuple[int, int] | None:
    """(start, step) mapping the k-th selected frame to file frame start + k*step, if knowable."""
    from ase.io.formats import string2index

    sel = string2index(index) if isinstance(index, str) else index
    if isinstance(sel, int):
        return (sel, 1) if sel >= 0 else None
    start, step = sel.start or 0, sel.step or 1
    return (start, step) if start >= 0 and step > 0 else None


_STRESS_KEY = re.compile(r"(^|\s)stress=")
_RAW_STRESS = "mfjax_raw_stress"


def _extxyz_properties(line: str, sep: str | None = None) -> dict[str, Any]:
    """ASE's extxyz comment-line parser, except that ``stress`` may hold any number of values.

    ASE treats ``stress`` as a "special 3x3" key and raises unless it has exactly 9 values, so the
    Voigt-6 form (xx yy zz yz xz xy) that ASE itself writes elsewhere fails to read. Such a line is
    parsed again with the key renamed, and ``stress`` comes back as a flat array: ``as_stress``
    accepts 6 or 9 values and reports any other count as an error of the field ``stress``.
    """
    try:
        return key_val_str_to_dict(line, sep)
    except ValueError as exc:
        if "info item stress," not in str(exc):
            raise
        original = exc
    info = key_val_str_to_dict(_STRESS_KEY.sub(r"\1" + _RAW_STRESS + "=", line), sep)
    if _RAW_STRESS not in info:
        raise original
    value = info.pop(_RAW_STRESS)
    if not isinstance(value, (np.ndarray, np.number, int, float)) or np.asarray(value).dtype.kind not in "iuf":
        raise ValueError(f"Got info item stress, expecting 6 (Voigt) or 9 numbers, but got {value!r}")
    info["stress"] = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return info


def iter_frames(path: str, index: str | int = ":", format: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (frame number in the file, ase.Atoms); parse errors become ``DataError`` naming the frame."""
    import ase.io
    from ase.io.formats import filetype

    path = V.check_file(path)
    try:
        fmt = format or filetype(path)
    except Exception as exc:  # noqa: BLE001 - ase raises many types for unknown files
        raise DataError(f"cannot tell the file format ({exc}); give data.datasets[].format", source=path) from None
    numbering = _frame_numbers(index)
    if fmt in _DB_FORMATS:
        yield from _iter_db(path, index)
        return
    k = 0
    extra = {"properties_parser": _extxyz_properties} if fmt == "extxyz" else {}
    frames = ase.io.iread(path, index=index, format=fmt, **extra)
    while True:
        frame = numbering[0] + k * numbering[1] if numbering else k
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - ase's parsers raise anything on bad text
            raise V.read_error(exc, path, frame) from exc
        yield frame, atoms
        k += 1


def _iter_db(path: str, index: str | int) -> Iterator[tuple[int, Any]]:
    """ASE database rows (in id order) with key-value pairs and data merged into info/arrays."""
    import ase.db
    from ase.io.formats import string2index

    try:
        rows = list(ase.db.connect(path).select())
    except Exception as exc:  # noqa: BLE001
        raise V.read_error(exc, path, None) from exc
    sel = string2index(index) if isinstance(index, str) else index
    numbers = list(range(len(rows)))
    chosen = [numbers[sel]] if isinstance(sel, int) else numbers[sel]
    for k in chosen:
        row = rows[k]
        try:
            atoms = row.toatoms()
        except Exception as exc:  # noqa: BLE001
            raise V.read_error(exc, path, k) from exc
        atoms.info.update(row.key_value_pairs)
        atoms.info["db_id"] = row.id
        for key, value in (row.data or {}).items():
            if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(atoms) and key != "numbers":
                atoms.arrays[key] = value
            else:
                atoms.info[key] = value
        yield k, atoms


def _label(atoms: Any, key: str, where: str) -> Any:
    results = getattr(atoms.calc, "results", None) or {}
    if key in results and results[key] is not None:
        return results[key]
    first, second = (atoms.arrays, atoms.info) if where == "arrays" else (atoms.info, atoms.arrays)
    value = first.get(key)
    return second.get(key) if value is None else value


def atoms_to_structure(
    atoms: Any,
    *,
    source: str,
    frame: int,
    fidelity: str | None = None,
    keys: LabelKeys = LabelKeys(),
    weight: Sequence[float] = (1.0, 1.0, 1.0),
    species: Collection[int] | None = None,
    fidelities: Sequence[str] | None = None,
    cutoff: float | None = None,
) -> tuple[Structure, list[tuple[str, str]]]:
    """One validated ``Structure`` from an ``ase.Atoms``; returns it with warnings (field, message)."""
    warnings: list[tuple[str, str]] = []
    numbers = np.asarray(atoms.numbers, dtype=np.int32)
    pbc = np.asarray(atoms.pbc, dtype=bool).reshape(3)
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    fid = V.check_fidelity(fidelity if fidelity is not None else atoms.info.get(keys.fidelity), fidelities, source, frame, keys.fidelity)
    energy = V.as_energy(_label(atoms, keys.energy, "info"), source, frame, keys.energy)
    forces = V.as_forces(_label(atoms, keys.forces, "arrays"), len(numbers), source, frame, keys.forces)
    stress, note = V.as_stress(_label(atoms, keys.stress, "info"), pbc, source, frame, keys.stress)
    if note:
        warnings.append((keys.stress, note))
    sid = atoms.info.get("structure_id")
    skip = {keys.energy, keys.stress, keys.fidelity, "structure_id"}
    info = {k: v for k, v in atoms.info.items() if k not in skip}
    structure = Structure(
        species=numbers,
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=cell,
        pbc=pbc,
        fidelity=fid,
        energy=energy,
        forces=forces,
        stress=stress,
        weight=tuple(float(w) for w in weight),
        source=source,
        index=frame,
        structure_id=None if sid is None else str(sid),
        info=info,
    )
    warnings += V.check_structure(structure, species=species, fidelities=fidelities, cutoff=cutoff)
    return structure, warnings


def read_structures(
    path: str,
    *,
    fidelity: str | None = None,
    keys: LabelKeys = LabelKeys(),
    index: str | int = ":",
    format: str | None = None,
    weight: Sequence[float] = (1.0, 1.0, 1.0),
    species: Collection[int] | None = None,
    fidelities: Sequence[str] | None = None,
    cutoff: float | None = None,
    require_labels: bool = False,
    on_error: Literal["raise", "exclude"] = "raise",
    report: DatasetReport | None = None,
) -> list[Structure]:
    """Read and validate every selected frame of ``path``.

    fidelity: the fidelity of every frame (None: ``atoms.info[keys.fidelity]`` per frame).
    species / fidelities: allowed atomic numbers / fidelity names (None: anything valid).
    cutoff: if given, atoms without a neighbour within it are reported (warning).
    require_labels: frames without energy, forces and stress are excluded (training data).
    on_error: "raise" the first bad frame's ``DataError``, or "exclude" bad frames and record why
        (file-level problems, e.g. a parse error, always raise).
    report: accounting filled in place (frames read, used, excluded with reasons, label coverage).
    Warnings (``DataWarning``) are aggregated per kind, naming the file and frames.
    """
    report = report if report is not None else DatasetReport(source=str(path))
    out: list[Structure] = []
    notes: dict[tuple[str, str], list[int]] = {}
    for frame, atoms in iter_frames(path, index=index, format=format):
        try:
            s, found = atoms_to_structure(
                atoms, source=str(path), frame=frame, fidelity=fidelity, keys=keys, weight=weight,
                species=species, fidelities=fidelities, cutoff=cutoff,
            )
        except DataError as exc:
            if on_error == "raise":
                raise
            report.record_excluded(frame, f"invalid {exc.field or 'frame'}", detail=str(exc))
            continue
        for field, message in found:
            notes.setdefault((field, _generic(message)), []).append(frame)
        if require_labels and s.energy is None and s.forces is None and s.stress is None:
            report.record_excluded(frame, "no energy, forces or stress label")
            notes.setdefault(("labels", "no energy, forces or stress label; frame excluded"), []).append(frame)
            continue
        report.record_used(s.fidelity, s.energy is not None, s.forces is not None, s.stress is not None)
        out.append(s)
    for (field, message), frames in notes.items():
        report.warnings.append(warn_frames(message, str(path), frames, field))
    for fid in dict.fromkeys(s.fidelity for s in out):
        for message in V.energy_unit_warnings([s for s in out if s.fidelity == fid]):
            report.warnings.append(warn_frames(f"fidelity {fid!r}: {message}", str(path), None, keys.energy))
    return out


def _generic(message: str) -> str:
    """Strip per-frame details so warnings of one kind aggregate (isolated atom lists)."""
    if message.startswith("atom(s) ") and "no neighbour within the cutoff" in message:
        return "atoms with no neighbour within the cutoff " + message.rsplit("cutoff ", 1)[1]
    return message
