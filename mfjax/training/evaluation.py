"""Evaluate variables on a batcher: per-fidelity metrics and, optionally, parity data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mfjax.data.batching import GraphBatcher
from mfjax.training.batches import iterate_steps
from mfjax.training.metrics import MetricAccumulator
from mfjax.training.sharding import host_value


@dataclass
class ParityData:
    """Per fidelity: energy per atom (eV/atom) and force components (eV/Å), reference vs predicted."""

    energy: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    forces: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    #: per fidelity, per energy entry: {Z: count} (to plot energies relative to a per-element fit)
    composition: dict[str, list[dict[int, int]]] = field(default_factory=dict)

    def add(self, kind: str, fidelity: str, ref: np.ndarray, pred: np.ndarray) -> None:
        refs, preds = getattr(self, kind).setdefault(fidelity, ([], []))
        refs.extend(np.ravel(ref).tolist())
        preds.extend(np.ravel(pred).tolist())


def _collect(parity: ParityData, batch, pred, fidelities: Sequence[str]) -> None:
    """Add the real, labelled structures of a host-side stacked batch to ``parity``."""
    batch, pred = jax.device_get((batch, pred))
    for d in range(np.asarray(batch.n_node).shape[0]):
        n_node = np.asarray(batch.n_node[d])
        glob = jax.tree.map(lambda x: np.asarray(x[d]), batch.globals)
        starts = np.concatenate([[0], np.cumsum(n_node)[:-1]])
        for g in np.flatnonzero(glob.graph_mask):
            name = fidelities[int(glob.fidelity[g])]
            n = int(n_node[g])
            sl = slice(starts[g], starts[g] + n)
            if glob.energy_mask[g]:
                parity.add("energy", name, glob.energy[g] / n, np.asarray(pred["energy"][d][g]) / n)
                z, c = np.unique(np.asarray(batch.nodes.species[d][sl]), return_counts=True)
                parity.composition.setdefault(name, []).append({int(a): int(b) for a, b in zip(z, c)})
            fmask = np.asarray(batch.nodes.forces_mask[d][sl])
            if fmask.any():
                parity.add("forces", name, batch.nodes.forces[d][sl][fmask], pred["forces"][d][sl][fmask])


def evaluate_batcher(
    eval_step: Callable,
    variables,
    batcher: GraphBatcher,
    fidelities: Sequence[str],
    n_devices: int,
    mesh: Mesh | None,
    *,
    parity: bool = False,
    device_offset: int = 0,
    n_global_devices: int | None = None,
    dtype=np.float32,
) -> tuple[dict, ParityData | None]:
    """({fidelity: metrics}, parity data or None) over every structure of ``batcher`` (epoch 0 order)."""
    acc = MetricAccumulator(fidelities)
    data = ParityData() if parity else None
    for step in iterate_steps(
        batcher, 0, n_devices, mesh, device_offset=device_offset, n_global_devices=n_global_devices, dtype=dtype
    ):
        sums, pred = eval_step(variables, step.batch)
        acc.add(host_value(sums))
        if data is not None:
            _collect(data, step.batch, pred, fidelities)
    return acc.result(), data
