"""Host-side batch plumbing: group per-device padded batches into steps, cast, place on the mesh."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from jax.sharding import Mesh

from mfjax.data.batching import GraphBatcher
from mfjax.data.graph import Graph, cast_floats
from mfjax.training.sharding import blank_graph, put_batch, stack_graphs

__all__ = ["Step", "cast_floats", "iterate_steps", "steps_per_epoch", "total_steps"]


@dataclass(frozen=True)
class Step:
    """One training/evaluation step: its index in the epoch, the device-stacked batch, and the
    indices (into the batcher's structures) of every real structure in it."""

    index: int
    batch: Graph
    structures: tuple[int, ...]


def steps_per_epoch(batcher: GraphBatcher, epoch: int, n_devices: int) -> int:
    return math.ceil(batcher.num_batches(epoch) / n_devices)


def total_steps(batcher: GraphBatcher, epochs: int, n_devices: int) -> int:
    return sum(steps_per_epoch(batcher, e, n_devices) for e in range(epochs))


def iterate_steps(
    batcher: GraphBatcher,
    epoch: int,
    n_devices: int,
    mesh: Mesh | None,
    *,
    start: int = 0,
    device_offset: int = 0,
    n_global_devices: int | None = None,
    dtype=np.float32,
) -> Iterator[Step]:
    """Steps of ``epoch`` from step ``start``: each takes the next ``n_global_devices`` batches of
    the epoch's plan, of which this process feeds ``n_devices`` starting at ``device_offset``
    (multi-host); a last incomplete step is filled with all-padding batches."""
    n_global = n_global_devices or n_devices
    plan: Sequence[np.ndarray] = batcher.plan(epoch)
    n_steps = math.ceil(len(plan) / n_global)
    template: Graph | None = None
    for k in range(start, n_steps):
        graphs, members = [], []
        for d in range(device_offset, device_offset + n_devices):
            j = k * n_global + d
            if j < len(plan):
                g = batcher.batch(plan[j])
                members.extend(int(i) for i in plan[j])
                template = g if template is None else template
            else:
                g = None
            graphs.append(g)
        if template is None:  # this process has no real batch in this step
            template = batcher.batch(plan[0])
        graphs = [blank_graph(template) if g is None else g for g in graphs]
        stacked = cast_floats(stack_graphs(graphs), dtype)
        yield Step(index=k, batch=put_batch(stacked, mesh) if mesh is not None else stacked, structures=tuple(members))
