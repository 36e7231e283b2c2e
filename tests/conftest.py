"""Shared test fixtures: keep this file small and generic."""

from __future__ import annotations

import os

import ase.build
import ase.io
import jax
import numpy as np
import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def si():
    """Diamond Si, 8-atom cubic cell."""
    return ase.build.bulk("Si", "diamond", a=5.43, cubic=True)


@pytest.fixture
def si_file(tmp_path, si):
    """``si`` written to an extxyz file in the test's temporary folder."""
    path = tmp_path / "si.extxyz"
    ase.io.write(path, si)
    return path


@pytest.fixture
def one_blas_thread():
    """One BLAS thread: the ASE cell filters' tiny matrix functions (scipy expm/logm) are ~10x slower
    with several OpenBLAS threads on a busy 2-core machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def make_atoms():
    """Factory of random ``ase.Atoms`` on a jittered grid (atoms >= ~1 Å apart), optionally labelled.

    make_atoms(symbols="CH4", periodic=True, seed=0, spacing=1.5, labels=True) -> ase.Atoms with a
    SinglePointCalculator holding energy, forces and (if periodic) stress.
    """
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    def factory(symbols: str = "CH4", periodic: bool = True, seed: int = 0, spacing: float = 1.5, labels: bool = True):
        rng = np.random.default_rng(seed)
        atoms = ase.Atoms(symbols)
        n = len(atoms)
        side = int(np.ceil(n ** (1 / 3)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
        atoms.positions = (grid + 0.5) * spacing + rng.uniform(-0.15, 0.15, (n, 3)) * spacing
        if periodic:
            atoms.cell = np.eye(3) * side * spacing + rng.uniform(-0.1, 0.1, (3, 3))
            atoms.pbc = True
        if labels:
            results = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
            if periodic:
                results["stress"] = rng.normal(size=6) * 0.01
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    return factory


# The CLI turns JAX's persistent compilation cache on (mfjax.utils.compilation_cache); tests run
# without it (tests/test_compilation_cache.py turns it on in a temporary folder).
os.environ.setdefault("MFJAX_NO_COMPILATION_CACHE", "1")
