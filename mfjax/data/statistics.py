"""Dataset statistics the model needs as constants (SPEC §3).

* ``fit_e0``: per-fidelity, per-element energy shifts E0[f, Z] by ridge regression (no intercept)
  of total energies on element counts, one fit per fidelity; fidelities with fewer labels are shrunk
  towards the best-labelled one (not towards zero).
* ``force_rms``: the energy scale, RMS of force components pooled over all fidelities.
* ``avg_num_neighbors``: mean number of neighbours (edges per atom) within the cutoff.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from mfjax.data.neighbors import structure_neighbors
from mfjax.data.report import warn_frames
from mfjax.data.structures import Structure

__all__ = ["element_counts", "fit_e0", "force_rms", "neighbor_counts", "avg_num_neighbors"]


def element_counts(structures: Sequence[Structure], species: Sequence[int]) -> np.ndarray:
    """[n_structures, n_species] number of atoms of each species (atoms outside ``species`` ignored)."""
    index = {int(z): k for k, z in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, s in enumerate(structures):
        for z, n in zip(*np.unique(s.species, return_counts=True)):
            if int(z) in index:
                counts[row, index[int(z)]] = n
    return counts


def fit_e0(
    structures: Sequence[Structure], species: Sequence[int], fidelities: Sequence[str], alpha: float = 0.1,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """E0 [n_fidelities, n_species] in eV/atom by ridge regression of total energies on element counts.

    The *anchor* fidelity (the one with the most energy labels; the first on a tie) is fitted as
    argmin |y - X w|^2 + alpha |w|^2. Every other fidelity is shrunk towards the anchor instead of
    towards zero: argmin |y - X w|^2 + alpha |w - w_anchor|^2. Total energies of two levels of theory
    differ by eV per molecule while E0 is hundreds of eV/atom, so with few high-fidelity frames
    (fewer than elements: an underdetermined fit) the high-fidelity E0 becomes the anchor's plus the
    smallest per-element correction that fits them, not an arbitrary solution; an element absent
    from a fidelity's data takes the anchor's E0 (with a ``DataWarning``). X: element counts of the
    fidelity's structures with an energy label, y: their total energies. A fidelity without energies,
    or an element absent from the anchor too, gets E0 = 0 (with a warning).

    prior: [n_species] eV/atom, what the anchor is shrunk towards instead of zero (and what it
    takes where it has no data): e.g. a pre-trained LF model's E0 when a new fidelity's E0 is fitted
    from a few frames (transfer learning, append), so that 2 frames for 4 elements give the LF E0
    plus the smallest correction that fits them instead of an arbitrary minimum-norm E0.
    """
    base = np.zeros(len(species)) if prior is None else np.asarray(prior, np.float64).reshape(len(species))
    own = "0" if prior is None else "the prior"
    e0 = np.zeros((len(fidelities), len(species)))
    labelled = [[s for s in structures if s.fidelity == name and s.energy is not None] for name in fidelities]
    order = sorted(range(len(fidelities)), key=lambda f: (-len(labelled[f]), f))
    anchor = order[0]
    for f in order:
        frames, name = labelled[f], fidelities[f]
        toward = base if f == anchor else e0[anchor]
        if not frames:
            warn_frames(f"fidelity {name!r} has no energy labels in these structures: its E0 is "
                        + (f"{own} for every element" if f == anchor else f"that of {fidelities[anchor]!r}"), None)
            e0[f] = toward
            continue
        x = element_counts(frames, species)
        y = np.array([s.energy for s in frames], dtype=np.float64)
        present = x.sum(axis=0) > 0
        missing = [chemical_symbols[int(z)] for z, p in zip(species, present) if not p]
        if missing:
            fallback = own if f == anchor else f"that of {fidelities[anchor]!r}"
            warn_frames(f"element(s) {', '.join(missing)} absent from fidelity {name!r}: their E0 is {fallback}", None)
        xp = x[:, present]
        residual = y - xp @ toward[present]
        e0[f] = toward
        e0[f, present] = toward[present] + np.linalg.solve(xp.T @ xp + alpha * np.eye(xp.shape[1]), xp.T @ residual)
    return e0


def force_rms(structures: Sequence[Structure]) -> float:
    """sqrt(mean(F_ic^2)) over every force component of every structure with forces (1.0 if none)."""
    total, count = 0.0, 0
    for s in structures:
        if s.forces is not None:
            total += float(np.sum(np.square(s.forces)))
            count += s.forces.size
    if count == 0 or total == 0.0:
        warn_frames("no force labels (or all zero): force-RMS scale set to 1.0", None)
        return 1.0
    return float(np.sqrt(total / count))


def neighbor_counts(structures: Sequence[Structure], cutoff: float) -> np.ndarray:
    """[n_structures] number of edges (directed neighbour pairs) of each structure."""
    return np.array(
        [len(structure_neighbors(s, cutoff).senders) for s in structures], dtype=np.int64
    )


def avg_num_neighbors(structures: Sequence[Structure], cutoff: float, counts: np.ndarray | None = None) -> float:
    """Total edges / total atoms of ``structures`` at ``cutoff`` (``counts`` reuses edge counts)."""
    atoms = sum(s.num_atoms for s in structures)
    if atoms == 0:
        return 0.0
    counts = neighbor_counts(structures, cutoff) if counts is None else np.asarray(counts)
    return float(np.sum(counts) / atoms)
