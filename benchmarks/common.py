"""Shared pieces of the benchmark harness: structures, labels, timing, memory, machine info.

Nothing here imports torch or sevenn; the mfjax and sevenn sides live in ``mfjax_side.py`` and
``sevenn_side.py`` and are compared by ``run.py``.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

SI_LATTICE = 5.43  # Å, diamond Si
CUTOFF = 5.0  # Å, SevenNet-0


def diamond_si(n_atoms: int, rattle: float = 0.02, seed: int = 0):
    """Diamond Si supercell of ``n_atoms`` (8 k^3: 64, 216, 512, 1000, 1728, 4096, ...) as ase.Atoms."""
    from ase.build import bulk

    k = round((n_atoms / 8) ** (1 / 3))
    if 8 * k**3 != n_atoms:
        raise ValueError(f"diamond Si cubic supercells have 8 k^3 atoms, not {n_atoms}")
    atoms = bulk("Si", "diamond", a=SI_LATTICE, cubic=True).repeat((k, k, k))
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def rattled_copies(base, n_structures: int, rattle: float = 0.05, seed: int = 0) -> list:
    """``n_structures`` copies of ``base`` (ase.Atoms), each rattled with its own seed."""
    frames = []
    for i in range(n_structures):
        atoms = base.copy()
        atoms.rattle(rattle, seed=seed * 100_000 + i)
        frames.append(atoms)
    return frames


def small_structures(kind: str, n_structures: int, seed: int = 0) -> list:
    """Many small structures: ``"molecules"`` = rattled ethanol (9 atoms, no cell), ``"cells"`` =
    rattled 8-atom cubic diamond Si cells (periodic)."""
    from ase.build import bulk, molecule

    if kind == "molecules":
        return rattled_copies(molecule("CH3CH2OH"), n_structures, seed=seed)
    if kind == "cells":
        return rattled_copies(bulk("Si", "diamond", a=SI_LATTICE, cubic=True), n_structures, seed=seed)
    raise ValueError(f"unknown kind of small structure {kind!r}; choose 'molecules' or 'cells'")


def labelled_si(n_structures: int, n_atoms: int = 64, seed: int = 0) -> list:
    """Rattled diamond Si frames with synthetic labels (a SinglePointCalculator).

    The labels are random but of realistic size (energy ~ -5.4 eV/atom, forces ~0.3 eV/Å,
    stress ~0.01 eV/Å³): they only make the optimiser do real work; the timing does not depend
    on them. Both codes train on exactly these frames.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_structures):
        atoms = diamond_si(n_atoms, rattle=0.05, seed=seed * 1000 + i)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=-5.4 * n_atoms + float(rng.normal()),
            forces=0.3 * rng.normal(size=(n_atoms, 3)),
            stress=0.01 * rng.normal(size=6),
        )
        frames.append(atoms)
    return frames


@dataclass
class Timing:
    """Wall-clock samples (s) of one repeated measurement."""

    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)  # process CPU time (all threads), s

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples) if self.cpu_samples else float("nan")

    def as_dict(self) -> dict:
        return {"median_s": self.median, "best_s": self.best, "samples_s": list(self.samples),
                "cpu_median_s": self.cpu_median, "cpu_samples_s": list(self.cpu_samples)}


def ase_efs_caller(atoms) -> Callable[[], None]:
    """A call that nudges ``atoms`` (so its calculator must recompute) and asks energy, forces, stress."""
    state = {"sign": 1.0}

    def call():
        atoms.positions += state["sign"] * 1e-3
        state["sign"] = -state["sign"]
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()

    return call


def interleave(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, Timing]:
    """Time each zero-argument callable once per round, alternating the order every round.

    The machine is shared: interleaving spreads the other users' load evenly over the codes being
    compared (ABBA order), so the ratio of medians is much steadier than either absolute figure.
    Process CPU time (all threads) is recorded too: on an oversubscribed machine it tracks the
    work done better than wall time (but counts the spinning of idle worker threads).
    """
    names = list(fns)
    out = {name: Timing() for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            out[name].samples.append(time.perf_counter() - t0)
            out[name].cpu_samples.append(time.process_time() - c0)
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB).

    VmHWM of /proc/self/status: the high-water mark of this process image. ``ru_maxrss`` is not
    used where VmHWM exists: Linux carries it over from the parent across fork + exec, so a worker
    started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": load_average(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as exc:  # noqa: BLE001 - informational only
        info["jax"] = f"unavailable: {exc}"
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b == 0:
        return None
    return float(a) / float(b)


def log(msg: str) -> None:
    """A progress line on stderr with the time and the load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()[0]:.1f}] {msg}", file=sys.stderr, flush=True)
