"""Structures for the materials commands: every frame of an ASE-readable file, optionally those of one
fidelity, with names that say where each came from ("FILE, frame K") and their energy labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mfjax.data import validation as V
from mfjax.data.io import iter_frames
from mfjax.errors import DataError

__all__ = ["Frame", "read_frames", "label_energies"]

FIDELITY_KEY = "fidelity"  # atoms.info key naming a frame's fidelity (as mfjax.config.LabelKeys)


@dataclass(frozen=True)
class Frame:
    """One frame of ``source`` (``index`` = its number in the file)."""

    atoms: Any
    source: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.source}, frame {self.index}"


def read_frames(path: str, fidelity: str | None = None) -> list[Frame]:
    """Every frame of ``path``; with ``fidelity``, only the frames whose ``info['fidelity']`` is it
    (frames without the key are kept). ``DataError`` names the file (missing, unreadable, no frame
    of that fidelity) or the frame (unparsable)."""
    frames = [Frame(atoms, str(path), k) for k, atoms in iter_frames(path)]
    if not frames:
        raise DataError("no structures in the file", source=str(path))
    if fidelity is None:
        return frames
    kept = [f for f in frames if str(f.atoms.info.get(FIDELITY_KEY, fidelity)).strip() == fidelity]
    if not kept:
        found = sorted({str(f.atoms.info.get(FIDELITY_KEY)) for f in frames})
        raise DataError(f"no frame of fidelity {fidelity!r} (the file has {', '.join(found)})",
                        source=str(path), field=FIDELITY_KEY)
    return kept


def label_energies(frames: Sequence[Frame], key: str = "energy") -> list[float]:
    """The total energy label (eV) of each frame: the calculator result, else ``info[key]``.

    ``DataError`` names the file, frame and field of a frame without a label, and of a set whose
    frames carry labels of several fidelities (choose one with ``read_frames(..., fidelity)``).
    """
    fidelities = sorted({str(f.atoms.info[FIDELITY_KEY]) for f in frames if FIDELITY_KEY in f.atoms.info})
    if len(fidelities) > 1:
        raise DataError(f"frames of several fidelities ({', '.join(fidelities)}): choose one (--fidelity)",
                        source=frames[0].source, field=FIDELITY_KEY)
    energies = []
    for f in frames:
        results = getattr(f.atoms.calc, "results", None) or {}
        value = results.get(key, f.atoms.info.get(key))
        energy = V.as_energy(value, f.source, f.index, key)
        if energy is None:
            raise DataError("no energy label (needed for energies from labels)", source=f.source, frame=f.index,
                            field=key)
        energies.append(energy)
    return energies
