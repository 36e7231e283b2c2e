"""Evaluate a model: per-fidelity metrics (``evaluate``), per-structure predictions
(``predict_structures``) and, on a batcher, parity data for plots (``evaluate_batcher``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mfjax.data.batching import BatchBudget, GraphBatcher, budget_for
from mfjax.data.structures import Structure
from mfjax.model import Model
from mfjax.training.batches import iterate_steps
from mfjax.training.compiled import StepCache
from mfjax.training.metrics import MetricAccumulator
from mfjax.training.sharding import host_value, mesh_layout

__all__ = ["ParityData", "evaluate", "predict_structures", "evaluate_batcher"]


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


def _batcher(model: Model, structures: Sequence[Structure], budget: BatchBudget | None, max_graphs: int) -> GraphBatcher:
    budget = budget_for(structures, model.cutoff, max_graphs) if budget is None else budget
    return GraphBatcher(structures, model.cutoff, model.spec.fidelity_map, budget, shuffle=False)


def evaluate(
    model: Model,
    structures: Sequence[Structure],
    *,
    budget: BatchBudget | None = None,
    max_graphs: int = 16,
    cache: StepCache | None = None,
    mesh: Mesh | None = None,
    parity: bool = False,
) -> dict | tuple[dict, ParityData | None]:
    """{fidelity: metrics} of ``model`` (a Δ model too) on labelled ``structures``, whose fidelities
    must be the model's; with ``parity`` also the parity data. ``budget``: the batch budget (None =
    derived from ``structures`` with ``max_graphs``); ``cache``: compiled steps to reuse; ``mesh``:
    shard the batches over its devices (None = one device)."""
    if not structures:
        return ({}, None) if parity else {}
    cache = StepCache() if cache is None else cache
    stress = any(s.stress is not None for s in structures)
    step = cache.eval_step(model, compute_stress=stress, mesh=mesh)
    n_local, n_global, offset = mesh_layout(mesh)
    metrics, data = evaluate_batcher(step, model.variables, _batcher(model, structures, budget, max_graphs),
                                     model.fidelities, n_local, mesh, parity=parity, device_offset=offset,
                                     n_global_devices=n_global, dtype=np.dtype(model.dtype))
    return (metrics, data) if parity else metrics


def predict_structures(
    model: Model, structures: Sequence[Structure], *, budget: BatchBudget | None = None, max_graphs: int = 16,
    cache: StepCache | None = None, mesh: Mesh | None = None,
) -> list[dict[str, np.ndarray]]:
    """Per structure (at its own fidelity) {"energy": float, "forces": [n, 3], "stress": [3, 3] (when
    a structure of the list has a stress label)}; ``mesh`` as for :func:`evaluate` (single process)."""
    if not structures:
        return []
    cache = StepCache() if cache is None else cache
    step_fn = cache.eval_step(model, compute_stress=any(s.stress is not None for s in structures), mesh=mesh)
    n_local, n_global, offset = mesh_layout(mesh)
    out: list = [None] * len(structures)
    for step in iterate_steps(_batcher(model, structures, budget, max_graphs), 0, n_local, mesh, device_offset=offset,
                              n_global_devices=n_global, dtype=np.dtype(model.dtype)):
        _, pred = jax.device_get(step_fn(model.variables, step.batch))
        batch = jax.device_get(step.batch)
        members = iter(step.structures)  # device by device, each device's real graphs in order
        for d in range(np.asarray(batch.n_node).shape[0]):
            n_node = np.asarray(batch.n_node[d])
            starts = np.concatenate([[0], np.cumsum(n_node)[:-1]])
            for g in np.flatnonzero(np.asarray(batch.globals.graph_mask[d])):
                sl = slice(starts[g], starts[g] + n_node[g])
                item = {"energy": float(pred["energy"][d][g]), "forces": np.asarray(pred["forces"][d][sl], np.float64)}
                if "stress" in pred:
                    item["stress"] = np.asarray(pred["stress"][d][g], np.float64)
                out[next(members)] = item
    return out
