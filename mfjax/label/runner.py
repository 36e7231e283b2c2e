"""Resumable, parallel labelling of a structure file at one or more levels of theory.

``label_file`` reads every frame of an ASE-readable file, and for each (frame, level) pair that the
output file does not already hold, computes the labels in a pool of worker processes and appends the
labelled frame to an extended-XYZ file as soon as it is done. Rerunning the same command therefore
resumes where it stopped; a killed run loses at most the frames in flight.

A frame is identified by ``(structure_id, fidelity)``; ``structure_id`` is taken from
``atoms.info['structure_id']`` and defaults to the frame's index in the input file. Every output frame
records in ``atoms.info``: ``structure_id``, ``fidelity``, ``method``, ``basis``, ``code``,
``scf_converged`` (bool), ``wall_time_s``, plus level-specific settings (``kmesh``...). Labels are
stored through a SinglePointCalculator, so ``ase.io.read(path, ':')`` gives them back via
``get_potential_energy``/``get_forces``/``get_stress``; a label a level does not produce is absent (not
zero). A frame whose SCF does not converge is written with ``scf_converged=False`` and no labels at
all (the last iteration's energy, in eV, goes to ``info['scf_energy_unconverged']`` for inspection, not
to the calculator, so no consumer mistakes it for a label); a frame whose calculation raises is written
with ``scf_converged=False``, no labels and the message in ``info['label_error']`` (one line, no double
quotes, so the file stays readable). Nothing is dropped silently: readers should skip frames with
``scf_converged`` false.

Before any calculation the levels are checked on the first molecule and the first cell of the input
(basis and pseudopotential names: ``levels.check_level``), so a typo stops the run with one line
instead of writing a failed frame per structure. A run killed mid-write leaves at most an incomplete
last frame; the next run keeps the complete frames, rewrites the file atomically without the rest and
warns once (``read_output``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mfjax.data.io import iter_frames
from mfjax.data.report import DataWarning
from mfjax.errors import DataError
from mfjax.label.levels import Level, LevelError, Result, Settings, check_level, code_version, compute

#: info keys written by the labeller (any older values on the input frame are replaced).
LABEL_KEYS = ("fidelity", "method", "basis", "code", "scf_converged", "wall_time_s", "label_error",
              "scf_energy_unconverged", "kmesh", "ke_cutoff", "pseudo", "density_fit", "frozen_core_orbitals")


@dataclasses.dataclass(frozen=True)
class Task:
    """One calculation: a frame (already tagged with its structure_id) at one level."""

    atoms: Atoms
    level: Level
    fidelity: str


@dataclasses.dataclass
class Summary:
    """What ``label_file`` did. Each (frame, level) written this run is counted exactly once, in
    ``n_done`` (converged: labels written), ``n_unconverged`` or ``n_failed`` (no labels)."""

    n_input: int
    n_skipped: int
    n_done: int
    n_unconverged: int
    n_failed: int
    total_wall_time_s: float
    first_error: str | None = None
    """``label_error`` of the first failed frame of this run (None: no failure)."""

    @property
    def n_written(self) -> int:
        """Frames appended to the output this run (labelled, unconverged or failed)."""
        return self.n_done + self.n_unconverged + self.n_failed


def one_line(text: str, limit: int = 400) -> str:
    """``text`` as a single extxyz-safe line: whitespace runs (newlines, tabs) become one space,
    double quotes become single quotes, backslashes slashes; at most ``limit`` characters."""
    text = " ".join(str(text).replace('"', "'").replace("\\", "/").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def structure_ids(frames: Sequence[Atoms], source: str | None = None) -> list[str]:
    """``info['structure_id']`` of each frame, defaulting to its index; must be unique."""
    ids = [str(a.info.get("structure_id", i)) for i, a in enumerate(frames)]
    repeated = [k for k, n in Counter(ids).items() if n > 1]
    if repeated:
        raise DataError(f"structure_id value(s) {repeated[:5]} occur more than once; ids must be unique",
                        source=source, field="structure_id")
    return ids


_COUNT_LINE = re.compile(r"^\s*(\d+)\s*$")


def _count(line: str) -> int | None:
    match = _COUNT_LINE.match(line)
    return int(match.group(1)) if match else None


def _parse_block(block: str) -> Atoms | None:
    try:
        return ase.io.read(io.StringIO(block), format="extxyz")
    except Exception:  # noqa: BLE001 - ase raises many types on a damaged frame
        return None


def _complete_frames(text: str) -> tuple[list[tuple[str, Atoms]], int]:
    """(text and Atoms of every complete frame, number of incomplete frames) of extxyz ``text``.

    A frame is complete when its count line, comment line and every atom line are present, the last
    one ends with a newline (a cut-off number would otherwise pass as a value) and it parses.
    After a damaged frame, reading resumes at the next count line that starts a frame.
    """
    lines = text.splitlines(keepends=True)
    frames: list[tuple[str, Atoms]] = []
    dropped, i = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = _count(lines[i])
        block = lines[i : i + n + 2] if n is not None else []
        complete = n is not None and len(block) == n + 2 and block[-1].endswith("\n")
        atoms = _parse_block("".join(block)) if complete else None
        if atoms is None:
            dropped += 1
            i += 1
            while i < len(lines) and _count(lines[i]) is None:  # resume at the next count line
                i += 1
            continue
        frames.append(("".join(block), atoms))
        i += n + 2
    return frames, dropped


def read_output(path: str | Path) -> list[Atoms]:
    """The complete frames of an output file, repairing it in place when a frame is incomplete.

    A labelling run killed while writing can leave a truncated last frame. The complete frames are
    kept byte for byte, the file is rewritten atomically (temporary file + rename) without the
    incomplete ones, and one ``DataWarning`` says how many were dropped (they are recomputed).
    Frames without ``structure_id`` or ``fidelity`` are a ``DataError``: not a labelling output.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    if not path.is_file():
        raise DataError("the output path is not a regular file", source=str(path))
    text = path.read_text(encoding="utf-8", errors="replace")
    frames, dropped = _complete_frames(text)
    for k, (_, atoms) in enumerate(frames):
        for key in ("structure_id", "fidelity"):
            if key not in atoms.info:
                raise DataError("missing: this file is not an `mfjax label` output (choose another --out)",
                                source=str(path), frame=k, field=key)
    if dropped:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("".join(block for block, _ in frames))
                handle.flush()
                os.fsync(handle.fileno())
            shutil.copymode(path, tmp)  # mkstemp creates 0600
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        warnings.warn(
            f"{path}: dropped {dropped} incomplete frame(s) (an interrupted write?), kept {len(frames)} "
            "complete frame(s); the dropped ones are computed again",
            DataWarning, stacklevel=2,
        )
    return [atoms for _, atoms in frames]


def done_keys(path: Path) -> set[tuple[str, str]]:
    """``(structure_id, fidelity)`` of every complete frame in an output file (empty if absent);
    repairs a truncated file (``read_output``)."""
    return {(str(a.info["structure_id"]), str(a.info["fidelity"])) for a in read_output(path)}


def check_levels(frames: Sequence[Atoms], levels: Sequence[Level], settings: Settings,
                 source: str | None = None) -> None:
    """``check_level`` of every level on the first molecule and the first fully periodic frame."""
    firsts: dict[str, int] = {}
    for i, atoms in enumerate(frames):
        pbc = np.asarray(atoms.pbc, dtype=bool)
        kind = "cell" if pbc.all() else "molecule" if not pbc.any() else "other"
        firsts.setdefault(kind, i)
    firsts.pop("other", None)
    for i in sorted(firsts.values()):
        sid = frames[i].info.get("structure_id", i)
        where = f"{source + ', ' if source else ''}structure_id {str(sid)!r}"
        for level in levels:
            check_level(frames[i], level, settings, where)


def labelled_atoms(atoms: Atoms, level: Level, fidelity: str, result: Result | None,
                   error: str | None = None) -> Atoms:
    """A copy of ``atoms`` carrying ``result`` as a SinglePointCalculator and the metadata."""
    out = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info.update({k: v for k, v in atoms.info.items() if k not in LABEL_KEYS})
    out.info.update({"fidelity": fidelity, "method": level.method, "basis": level.basis,
                     "code": code_version()})
    if result is None:
        out.info.update({"scf_converged": False, "wall_time_s": 0.0, "label_error": one_line(error or "unknown error")})
        return out
    out.info.update({"scf_converged": result.converged, "wall_time_s": round(result.wall_time_s, 3)})
    out.info.update(result.extra)
    if not result.converged:  # the last SCF energy is kept for inspection but is not a label
        if result.energy is not None:
            out.info["scf_energy_unconverged"] = result.energy
        return out
    results = {"energy": result.energy}
    if result.forces is not None:
        results["forces"] = result.forces
    if result.stress is not None:
        results["stress"] = result.stress
    if result.energy is not None:
        out.calc = SinglePointCalculator(out, **results)
    return out


def _run_task(args: tuple[Task, Settings]) -> Atoms:
    task, settings = args
    try:
        result = compute(task.atoms, task.level, settings)
    except Exception as exc:  # noqa: BLE001 -- recorded in the frame, never dropped
        return labelled_atoms(task.atoms, task.level, task.fidelity, None, f"{type(exc).__name__}: {exc}")
    return labelled_atoms(task.atoms, task.level, task.fidelity, result)


def _set_threads(threads: int) -> None:
    from pyscf import lib

    lib.num_threads(threads)


def _init_worker(threads: int) -> None:
    """Pool initializer: die with the parent (Linux), then set the OpenMP thread count."""
    if sys.platform.startswith("linux"):
        try:  # PR_SET_PDEATHSIG: a killed run leaves no orphaned workers computing
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    _set_threads(threads)


def make_tasks(frames: Sequence[Atoms], levels: Sequence[Level], fidelities: Sequence[str],
               skip: set[tuple[str, str]]) -> list[Task]:
    """Tasks for every (frame, level) not in ``skip``; frame-major order (all levels of frame 0 first)."""
    tasks = []
    for sid, atoms in zip(structure_ids(frames), frames):
        tagged = atoms.copy()
        tagged.calc = None
        tagged.info["structure_id"] = sid
        for level, fid in zip(levels, fidelities):
            if (sid, fid) not in skip:
                tasks.append(Task(tagged, level, fid))
    return tasks


def label_frames(frames: Sequence[Atoms], levels: Sequence[Level], out_path: str | Path, *,
                 fidelities: Sequence[str] | None = None, workers: int = 1,
                 threads_per_worker: int | None = None, settings: Settings | None = None,
                 progress: bool = True, source: str | None = None) -> Summary:
    """Label ``frames`` at ``levels``, appending to ``out_path`` (extxyz) and skipping finished frames.

    Args:
        frames: structures; ``info['structure_id']`` (else the index) identifies each one.
        levels: levels of theory; each output frame carries one level.
        out_path: extended-XYZ output, appended to frame by frame.
        fidelities: fidelity name per level (default: the level's default, ``pbe``/``r2scan``/``ccsdt``).
        workers: worker processes (1: run in this process).
        threads_per_worker: OpenMP threads per worker (default: cores // workers, at least 1).
        settings: numerical settings shared by all calculations.
        progress: show a tqdm progress bar with ETA.
        source: the input file's name, for messages.

    Raises ``LevelError`` (before any calculation, leaving ``out_path`` untouched) when a level's
    basis or pseudopotential cannot be set up for the first molecule or cell of ``frames``.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    settings = settings or Settings()
    fidelities = list(fidelities) if fidelities is not None else [lv.default_fidelity for lv in levels]
    if len(fidelities) != len(levels) or len(set(fidelities)) != len(fidelities):
        raise LevelError(f"need one distinct fidelity name per level, got {fidelities} for "
                         f"{[lv.name for lv in levels]}: give --fidelity NAME once per --level")
    structure_ids(frames, source)  # unique, before anything is written
    check_levels(frames, levels, settings, source)
    skip = done_keys(out_path)
    tasks = make_tasks(frames, levels, fidelities, skip)
    n_total = len(frames) * len(levels)
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(workers, 1))
    summary = Summary(len(frames), n_total - len(tasks), 0, 0, 0, 0.0)
    if not tasks:
        return summary
    out_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(tasks), disable=not progress, desc=out_path.name, unit="frame",
               mininterval=2.0, smoothing=0.1)
    args = [(t, settings) for t in tasks]
    if workers <= 1:
        _set_threads(threads)
        results = map(_run_task, args)
        _consume(results, out_path, summary, bar)
    else:
        # spawn (not fork): OpenMP runtimes are not fork-safe; children inherit OMP_NUM_THREADS.
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(threads,)) as pool:
                _consume(pool.imap_unordered(_run_task, args), out_path, summary, bar)
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
    bar.close()
    return summary


def _consume(results, out_path: Path, summary: Summary, bar) -> None:  # type: ignore[no-untyped-def]
    for atoms in results:
        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        with open(out_path, "a") as handle:  # one write per frame: a kill cannot split a frame
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        summary.total_wall_time_s += float(atoms.info["wall_time_s"])
        if "label_error" in atoms.info:
            summary.n_failed += 1
            summary.first_error = summary.first_error or str(atoms.info["label_error"])
        elif not atoms.info["scf_converged"]:
            summary.n_unconverged += 1
        else:
            summary.n_done += 1
        bar.update(1)


def label_file(in_path: str | Path, levels: Sequence[Level], out_path: str | Path, *,
               index: str = ":", **kwargs) -> Summary:
    """Read ``in_path`` (any ASE-readable format, frames ``index``) and call ``label_frames``.

    A frame without ``info['structure_id']`` gets its index in the whole file, so labelling a file in
    several ``index`` slices gives the same ids as labelling it at once.
    """
    from ase.io.formats import string2index

    everything = [atoms for _, atoms in iter_frames(str(in_path))]  # parse errors: DataError
    try:
        selector = string2index(index) if isinstance(index, str) else index
        positions = list(range(len(everything)))[selector]
    except (ValueError, IndexError):
        raise DataError(f"--index {index!r} selects nothing valid from {len(everything)} frame(s)",
                        source=str(in_path)) from None
    positions = [positions] if isinstance(positions, int) else positions
    frames = []
    for i in positions:
        atoms = everything[i]
        atoms.info.setdefault("structure_id", str(i))
        frames.append(atoms)
    kwargs.setdefault("source", str(in_path))
    return label_frames(frames, levels, out_path, **kwargs)
