"""Data parallelism: a ("data",) mesh over all devices, per-device batches stacked on axis 0.

Each device gets its own padded batch; the host stacks D of them into one ``Graph`` whose arrays
have a leading axis of length D, sharded ``P("data")``; the training state is replicated ``P()``.
The step ``vmap``s the per-device computation with ``spmd_axis_name="data"`` under ``jax.jit``.

Multi-host (one process per host, all hosts run the same command)::

    # on every host, e.g. with SLURM or by hand
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<0|1> \
        mfjax train config.yaml --set train.distributed=true

``init_distributed`` calls ``jax.distributed.initialize()`` (which also auto-detects SLURM, Open MPI
and TPU pods); each process then feeds ``jax.local_device_count()`` batches per step, its slice of
the global D = ``jax.device_count()`` batches, through ``jax.make_array_from_process_local_data``.
On CPU the cross-process collectives use gloo (set before ``initialize``), so the same launch runs
as two processes on one machine (``tests/test_multiprocess.py``)::

    for i in 0 1; do
      JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=1 \
      JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
        mfjax train config.yaml --set train.distributed=true &
    done; wait

Only process 0 writes the run directory's files (logs, CSVs, config, exported model); every
process takes part in Orbax checkpoint saves and restores (one shared run directory: a shared
file system across hosts, or the same directory on one machine).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mfjax.data.graph import Graph

_ENV_HINTS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def init_distributed(enabled: bool | None = None) -> bool:
    """Start multi-host JAX when ``enabled`` (or, if None, when a coordinator address is in the env).

    Must run before any other JAX call. Returns whether more than one process takes part.
    """
    if enabled is None:
        enabled = any(os.environ.get(k) for k in _ENV_HINTS)
    if enabled and not jax.distributed.is_initialized():
        platforms = str(jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "") or "cpu")
        if "cpu" in platforms.split(","):  # CPU collectives across processes need gloo, set before initialize
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # JAX reads JAX_COORDINATOR_ADDRESS itself; the process count and id are passed on from the
        # environment when given (else JAX auto-detects them on SLURM, Open MPI and TPU pods).
        count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(
            num_processes=int(count) if count else None, process_id=int(index) if index else None
        )
    return jax.process_count() > 1


def is_main_process() -> bool:
    """Whether this process writes shared files (process 0; always true in one process)."""
    return jax.process_index() == 0


def sync_processes(name: str) -> None:
    """Wait until every process reaches this point (no-op in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ("data",) mesh over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), ("data",))


def local_batch_count(mesh: Mesh) -> int:
    """How many per-device batches this process feeds per step."""
    return sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())


def mesh_layout(mesh: Mesh | None) -> tuple[int, int, int]:
    """(per-device batches this process feeds, devices of the mesh, this process's first device)
    per step; (1, 1, 0) without a mesh."""
    if mesh is None:
        return 1, 1, 0
    offset = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()][0]
    return local_batch_count(mesh), int(mesh.devices.size), offset


def stack_graphs(graphs: Sequence[Graph]) -> Graph:
    """Stack equally padded graphs on a new leading (device) axis (numpy, host side)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *graphs)


def blank_graph(graph: Graph) -> Graph:
    """A copy of ``graph`` where every structure is padding (fills the last incomplete step)."""
    glob = graph.globals
    return graph._replace(
        nodes=graph.nodes.replace(forces_mask=np.zeros_like(np.asarray(graph.nodes.forces_mask))),
        globals=glob.replace(
            graph_mask=np.zeros_like(np.asarray(glob.graph_mask)),
            energy_mask=np.zeros_like(np.asarray(glob.energy_mask)),
            stress_mask=np.zeros_like(np.asarray(glob.stress_mask)),
            weight=np.zeros_like(np.asarray(glob.weight)),
        ),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_batch(stacked: Graph, mesh: Mesh) -> Graph:
    """Place a host-stacked batch [D_local, ...] on the mesh, sharded over "data"."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(stacked, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), stacked)


def put_replicated(tree, mesh: Mesh):
    """Replicate a pytree (the training state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def host_value(tree):
    """numpy copy of a pytree of replicated (possibly multi-host) arrays."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
