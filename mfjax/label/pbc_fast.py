"""Faster k-point RKS labels for GTH cells: pyscf's numbers at a fraction of the cost.

``CachedKNumInt``: pyscf's FFTDF evaluates every AO (and its derivatives) on the whole FFT grid
twice per SCF cycle (once for the Coulomb matrix, once for the XC matrix), and that evaluation is
most of a cycle's time. This numerical integrator keeps the AO values of each full-grid loop in
memory (read-only, up to ``max_cache_mb``) and serves the next identical loop from there.

``Gradients``: pyscf 2.14's ``pyscf.pbc.grad.krhf.hcore_generator`` builds, for every atom and every k-point, the
full AO matrix of the atom's local-pseudopotential derivative on the FFT grid (an AO evaluation and
three grid x nao x nao contractions per atom and k-point): for an 8-atom cell at 2x2x2 k-points and
ke_cutoff 60 Ha that is most of the force time. Only its trace with the density matrix enters the
forces, and that trace is the integral of the density times the derivative of the atom's local
potential, so ``Gradients`` here evaluates the density on the grid once per k-point and returns
that Hellmann-Feynman term through pyscf's ``extra_force`` hook; ``hcore_generator`` keeps only the
basis-function (Pulay) part. Everything else (the XC and Coulomb terms, the nonlocal
pseudopotential, the overlap, the Ewald term, and ``get_stress``) is pyscf's own code.

This module imports pyscf at import time; ``mfjax.label.levels`` imports it only for cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyscf.pbc import tools
from pyscf.pbc.dft.numint import KNumInt, eval_ao_kpts
from pyscf.pbc.grad import krks as krks_grad
from pyscf.pbc.gto.pseudo.pp import get_vlocG


def local_pp_forces(cell: Any, kpts: np.ndarray, dm_kpts: np.ndarray) -> np.ndarray:
    """``(natm, 3)``: the local-pseudopotential Hellmann-Feynman term of the energy gradient (Hartree
    per Bohr, k-point averaged): ``1/nk sum_k Tr[D_k <mu| d V_loc,A / d R_A |nu>]``, which is what
    pyscf's ``hcore_generator`` contributes through its per-atom AO matrices."""
    coords = cell.get_uniform_grids()
    rho = np.zeros(len(coords))
    for k, kpt in enumerate(kpts):
        ao = eval_ao_kpts(cell, coords, kpt)[0]
        rho += np.einsum("gj,gj->g", ao, ao.conj() @ dm_kpts[k].T).real
    structure = cell.get_SI()
    vloc = get_vlocG(cell)
    de = np.zeros((cell.natm, 3))
    for atom in range(cell.natm):
        weight = structure[atom] * vloc[atom]
        for axis in range(3):
            potential = tools.ifft(1j * cell.Gv[:, axis] * weight, cell.mesh).real
            de[atom, axis] = potential @ rho
    return de / len(kpts)


class Gradients(krks_grad.Gradients):
    """``pyscf.pbc.grad.krks.Gradients`` with the local-pseudopotential term done once on the grid
    (see the module docstring); same gradients and stress as pyscf's class."""

    _keys = frozenset({"_local_pp_de"})

    def hcore_generator(self, cell: Any = None, kpts: np.ndarray | None = None) -> Any:
        cell = self.cell if cell is None else cell
        kpts = self.kpts if kpts is None else kpts
        if not cell._pseudo:
            return super().hcore_generator(cell, kpts)
        h1 = self.get_hcore(cell, kpts)  # (nk, 3, nao, nao): <d mu| T + V_loc |nu>
        self._local_pp_de = local_pp_forces(cell, kpts, self.base.make_rdm1())
        aoslices = cell.aoslice_by_atom()

        def hcore_deriv(atom: int) -> np.ndarray:
            p0, p1 = aoslices[atom, 2:]
            nk, nao = h1.shape[0], h1.shape[2]
            hcore = np.zeros([3, nk, nao, nao], dtype=h1.dtype)
            for k in range(nk):
                hcore[:, k, p0:p1] -= h1[k, :, p0:p1]
                hcore[:, k, :, p0:p1] -= h1[k, :, p0:p1].transpose(0, 2, 1).conj()
            return hcore

        return hcore_deriv

    def extra_force(self, atom_id: int, envs: dict) -> np.ndarray:
        extra = super().extra_force(atom_id, envs)
        local = getattr(self, "_local_pp_de", None)
        return extra if local is None else extra + local[atom_id]


class CachedKNumInt(KNumInt):
    """``pyscf.pbc.dft.numint.KNumInt`` whose ``block_loop`` over a whole grid is computed once per
    (grid, derivative order, k-points) and then replayed from memory: identical AO values, so
    identical results. Loops with ``kpts_band``, an explicit ``non0tab`` or ``blksize`` are not
    cached, nor any loop whose AO values would take the cache above ``max_cache_mb``.
    Use one instance per cell (the key does not include the geometry); ``clear`` frees the memory.

    Every loop (cached or not, including those of pyscf's gradients and stress, which pass no
    ``max_memory`` and so get 2000 MB blocks, 5-7 GB of AO derivatives for an 8-atom cell at 60 Ha)
    uses blocks of at most ``block_memory_mb``: the same sums in smaller pieces."""

    def __init__(self, max_cache_mb: float = 1500.0, block_memory_mb: float = 400.0) -> None:
        super().__init__()
        self.max_cache_mb = max_cache_mb
        self.block_memory_mb = block_memory_mb
        self._cache: dict[tuple, list] = {}
        self._cache_bytes = 0

    def clear(self, stop: bool = False) -> None:
        """Free the cached AO values; ``stop``: cache nothing from now on."""
        self._cache, self._cache_bytes = {}, 0
        if stop:
            self.max_cache_mb = 0.0

    def block_loop(self, cell: Any, grids: Any, nao: int | None = None, deriv: int = 0, kpts: Any = None,
                   kpts_band: Any = None, max_memory: float = 2000, non0tab: Any = None,
                   blksize: int | None = None) -> Any:
        if grids.coords is None:
            grids.build(with_non0tab=True)
        max_memory = min(max_memory, self.block_memory_mb)
        parent = super().block_loop(cell, grids, nao, deriv, kpts, kpts_band, max_memory, non0tab, blksize)
        if kpts_band is not None or non0tab is not None or blksize is not None:
            yield from parent
            return
        key = (id(grids), len(grids.coords), nao, deriv,
               None if kpts is None else np.asarray(kpts).tobytes())
        if key in self._cache:
            yield from self._cache[key]
            return
        comp = (deriv + 1) * (deriv + 2) * (deriv + 3) // 6
        nkpts = 1 if kpts is None else len(np.reshape(kpts, (-1, 3)))
        size = nkpts * comp * len(grids.coords) * (nao or cell.nao) * 16
        if self._cache_bytes + size > self.max_cache_mb * 1e6:
            yield from parent
            return
        blocks = []
        for ao_k1, ao_k2, mask, weight, coords in parent:
            for array in ao_k1:
                array.setflags(write=False)  # a consumer that writes into cached values fails loudly
            blocks.append((ao_k1, ao_k2, mask, weight, coords))
            yield ao_k1, ao_k2, mask, weight, coords
        self._cache[key] = blocks
        self._cache_bytes += size
