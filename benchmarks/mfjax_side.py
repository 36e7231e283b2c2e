"""The mfjax side of the benchmarks: inference, training, MD, compile/memory figures.

Every function uses the library's own code paths (``mfjax.physics.predict``, the ASE
``MfjaxCalculator``, ``mfjax.training.step.make_train_step`` fed by ``GraphBatcher``, the jax-md
``energy_fn_for`` + ``EpisodeRunner``) so the figures are those a user gets. Random weights are
used: the timing does not depend on their values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import CUTOFF, ase_efs_caller
from mfjax.data.graph import num_edges, num_nodes

#: Mean neighbour count of diamond Si at r_c = 5 Å (1792 edges / 64 atoms); the convolution's
#: denominator. Its value does not change the cost.
AVG_NUM_NEIGHBORS = 28.0
FIDELITY = "pbe"
#: 89 elements, as SevenNet-0's species embedding (89 x 128): the parameter counts then match
#: (842,440 for sevennet-0); only Si occurs in the benchmarks. The count does not change the cost.
SPECIES = tuple(range(1, 90))


def model_config(preset: str):
    from mfjax.config import resolve_model
    from mfjax.nn.config import ModelConfig
    from mfjax.utils.configtools import from_dict

    return from_dict(ModelConfig, resolve_model({"preset": preset}), "model")


def cast_graph(graph, dtype=np.float32):
    """Host graph with float arrays in ``dtype`` (ints and bools unchanged), as numpy."""
    return jax.tree.map(
        lambda x: np.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x),
        graph,
    )


def example_graph(atoms, n_node: int | None = None, n_edge: int | None = None, dtype=np.float32):
    """Padded single-structure graph of ``atoms`` (one spare node and graph, edges rounded up)."""
    from mfjax.data.batching import pad_graph, structures_to_graph
    from mfjax.data.structures import structure_from_atoms

    graph = structures_to_graph([structure_from_atoms(atoms, FIDELITY)], CUTOFF, {FIDELITY: 0})
    n_node = n_node or num_nodes(graph) + 1
    n_edge = n_edge or int(np.ceil(num_edges(graph) / 64) * 64)
    return cast_graph(pad_graph(graph, n_node, n_edge, 2), dtype)


def build_model(preset: str, seed: int = 0, dtype=np.float32):
    """A single-fidelity ``Model`` (89 species, like SevenNet-0) with random weights, float32."""
    from ase.build import bulk

    from mfjax.model import Model, ModelSpec

    spec = ModelSpec(model_config(preset), SPECIES, (FIDELITY,), AVG_NUM_NEIGHBORS)
    small = bulk("Si", "diamond", a=5.43)
    return Model(spec, spec.init(seed, example_graph(small, dtype=dtype))).astype(dtype)


def count_params(model) -> int:
    from mfjax.nn.model import count_parameters

    return count_parameters(model.variables["params"])


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------
@dataclass
class InferenceCase:
    """E+F+S of one structure: ``jit_call`` (device only, fixed padded graph) and ``ase_call``
    (the ASE calculator: host neighbour list + padding + the same compiled function)."""

    n_atoms: int
    n_edges: int
    compile_s: float
    jit_call: Any
    ase_call: Any
    calculator: Any
    graph: Any  # the padded device graph ``jit_call`` evaluates


def inference_case(model, atoms) -> InferenceCase:
    from mfjax.data.batching import pad_graph, structures_to_graph
    from mfjax.data.structures import structure_from_atoms
    from mfjax.model.calculator import MfjaxCalculator

    calc_atoms = atoms.copy()
    calc = MfjaxCalculator(model, FIDELITY)
    calc_atoms.calc = calc
    t0 = time.perf_counter()
    calc_atoms.get_forces()  # the one compilation (E+F+S: a fresh calculator computes stress for a cell)
    compile_s = time.perf_counter() - t0
    calc_atoms.get_stress()
    ase_call = ase_efs_caller(calc_atoms)

    # the same compiled function on a fixed, already padded device graph: no host work at all
    host = structures_to_graph([structure_from_atoms(atoms, FIDELITY)], model.cutoff, {FIDELITY: 0})
    n_edges = num_edges(host)
    graph = jax.tree.map(jnp.asarray, cast_graph(pad_graph(host, *calc.capacity, 2)))

    def jit_call():
        jax.block_until_ready(calc._run(model.variables, graph, True))

    jit_call()
    return InferenceCase(len(atoms), n_edges, compile_s, jit_call, ase_call, calc, graph)


# ---------------------------------------------------------------------------------------------
# many small structures
# ---------------------------------------------------------------------------------------------
@dataclass
class BatchedCase:
    """``Model.predict(frames, batch_size)`` (E, F and, for cells, S of every structure)."""

    call: Any  # () -> None: one pass over all frames
    first_pass_s: float  # the first pass, compilations included
    compilations: Any  # () -> int: executables compiled since the first pass began (jit cache entries added)
    buckets: int  # distinct padded shapes of the batches: the expected number of compilations
    n_batches: int
    real_edges: int  # edges of all structures
    padded_edges: int  # edges computed, padding included (each costs as much as a real one)
    host_graph_s: float  # host time to build the batches' graphs (part of each pass)


def padded_shapes(model, frames, batch_size: int) -> tuple[list[tuple[int, int, int]], int, float]:
    """(nodes, edges, graphs) of each padded batch ``Model.predict`` builds for ``frames``, the real
    edges in all batches, and the host seconds to build their graphs (neighbour lists included)."""
    from mfjax.data.batching import bucket_shape, structures_to_graph
    from mfjax.data.structures import structure_from_atoms

    shapes, real_edges, t0 = [], 0, time.perf_counter()
    for k in range(0, len(frames), batch_size):
        chunk = [structure_from_atoms(a, FIDELITY) for a in frames[k : k + batch_size]]
        graph = structures_to_graph(chunk, model.cutoff, {FIDELITY: 0})
        real_edges += num_edges(graph)
        shapes.append(bucket_shape(graph))
    return shapes, real_edges, time.perf_counter() - t0


def batched_case(model, frames, batch_size: int) -> BatchedCase:
    """Time ``model.predict(frames, batch_size=...)``: the library packs the structures into padded
    batches (power-of-two buckets), one compilation per distinct bucket."""
    before = model._predict._cache_size()
    t0 = time.perf_counter()
    model.predict(frames, batch_size=batch_size)
    first_pass_s = time.perf_counter() - t0
    shapes, real_edges, host_s = padded_shapes(model, frames, batch_size)

    def call():
        model.predict(frames, batch_size=batch_size)

    return BatchedCase(call, first_pass_s, lambda: model._predict._cache_size() - before, len(set(shapes)), len(shapes),
                       real_edges, sum(e for _, e, _ in shapes), host_s)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingCase:
    n_structures: int
    batch_size: int
    epoch: Any  # () -> None: one epoch over the structures
    compile_s: float
    traces: Any  # () -> int: number of traces of the step so far
    cache_size: Any  # () -> int: compiled executables of the step
    n_params: int


def training_case(preset: str, frames, batch_size: int, seed: int = 0) -> TrainingCase:
    """mfjax's training step on ``frames`` (ase.Atoms with labels), float32, Adam, SPEC loss."""

    from mfjax.data.batching import GraphBatcher, budget_for
    from mfjax.data.structures import Structure
    from mfjax.physics import predict
    from mfjax.training.batches import iterate_steps
    from mfjax.training.loss import LossSettings
    from mfjax.training.state import create_state
    from mfjax.config import TrainConfig
    from mfjax.training.optim import make_optimizer
    from mfjax.training.step import make_train_step

    structures = [
        Structure(
            species=np.asarray(a.numbers, np.int32), positions=np.asarray(a.positions), cell=np.asarray(a.cell.array),
            pbc=np.asarray(a.pbc), fidelity=FIDELITY, energy=float(a.get_potential_energy()),
            forces=np.asarray(a.get_forces()), stress=_voigt_to_3x3(a.get_stress()),
        )
        for a in frames
    ]
    model = build_model(preset, seed)
    batcher = GraphBatcher(structures, CUTOFF, {FIDELITY: 0}, budget_for(structures, CUTOFF, batch_size), shuffle=True, seed=seed)
    counter = {"traces": 0}

    def predict_fn(variables, graph):
        counter["traces"] += 1  # trace-time side effect: counts compilations of the step
        return predict(model.apply_fn, variables, graph, compute_stress=True)

    optimizer, _ = make_optimizer(TrainConfig(lr=1e-2, schedule="constant"), 1_000_000)  # Adam, lr 1e-2
    step = make_train_step(predict_fn, optimizer, LossSettings(), np.ones(1))
    holder = {"state": create_state(model.variables, optimizer, seed, use_ema=False), "epoch": 0}

    def epoch():
        state = holder["state"]
        logs = None
        for s in iterate_steps(batcher, holder["epoch"], 1, None):
            state, logs = step(state, s.batch)
        jax.block_until_ready(logs["loss"])
        holder["state"] = state
        holder["epoch"] += 1

    t0 = time.perf_counter()
    first = next(iterate_steps(batcher, 0, 1, None))
    _, logs = step(holder["state"], first.batch)  # compile (state not donated away: fresh copy)
    jax.block_until_ready(logs["loss"])
    compile_s = time.perf_counter() - t0
    holder["state"] = create_state(model.variables, optimizer, seed, use_ema=False)
    return TrainingCase(
        len(structures), batch_size, epoch, compile_s, lambda: counter["traces"],
        lambda: step._cache_size(), count_params(model),
    )


def _voigt_to_3x3(v):
    from ase.stress import voigt_6_to_full_3x3_stress

    return np.asarray(voigt_6_to_full_3x3_stress(np.asarray(v)))


# ---------------------------------------------------------------------------------------------
# MD
# ---------------------------------------------------------------------------------------------
@dataclass
class JaxMDCase:
    run: Any  # (n_steps) -> seconds
    compile_s: float
    compile_count: Any
    episode: Any = None  # the jitted episode (state, nbr) -> (state, nbr, overflow), for profiles
    carry: Any = None  # () -> (state, nbr): the current arguments of ``episode``


def jaxmd_case(model, atoms, steps_per_episode: int, skin: float = 0.0, seed: int = 0) -> JaxMDCase:
    """NVT Langevin (300 K, 1 fs) with mfjax's jax-md ``energy_fn``, in ``lax.fori_loop`` episodes.

    One jitted episode = ``steps_per_episode`` integrator steps, each followed by a neighbour-list
    update; the overflow flag is checked on the host after the episode (reallocate and rerun, as
    ``mfjax.md.runner.EpisodeRunner`` does; its per-episode observables are left out here so that
    only the dynamics is timed and compiled). ``run(n_steps)`` returns seconds.
    """
    from mfjax.md.integrators import make_simulator
    from mfjax.md.jaxmd import box_from_cell, energy_fn_for
    from mfjax.md.units import masses_for_jaxmd

    dtype = jnp.asarray(0.0).dtype
    box = jnp.asarray(box_from_cell(atoms.cell.array), dtype)
    pot = energy_fn_for(model, FIDELITY, atoms.numbers, box, dr_threshold=skin)
    sim = make_simulator(pot, "nvt", timestep_fs=1.0, temperature_K=300.0)
    R = jnp.asarray(atoms.positions, dtype)
    nbr = pot.neighbor_fn.allocate(R)
    state = sim.init(jax.random.PRNGKey(seed), R, jnp.asarray(masses_for_jaxmd(atoms.numbers), dtype), nbr)
    traces = {"n": 0}

    def episode(state, nbr):
        traces["n"] += 1

        def body(_, carry):
            state, nbr, overflow = carry
            state = sim.step(state, nbr)
            nbr = nbr.update(state.position)
            return state, nbr, overflow | jnp.asarray(nbr.did_buffer_overflow).astype(bool)

        return jax.lax.fori_loop(0, steps_per_episode, body, (state, nbr, jnp.zeros((), bool)))

    episode = jax.jit(episode)
    holder = {"state": state, "nbr": nbr, "reallocations": 0}

    def run(n_steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(max(1, n_steps // steps_per_episode)):
            while True:
                new_state, new_nbr, overflow = episode(holder["state"], holder["nbr"])
                if not bool(overflow):
                    break
                holder["reallocations"] += 1
                holder["nbr"] = pot.neighbor_fn.allocate(holder["state"].position)
            holder["state"], holder["nbr"] = new_state, new_nbr
        jax.block_until_ready(holder["state"].position)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    run(steps_per_episode)  # compiles the episode
    compile_s = time.perf_counter() - t0
    return JaxMDCase(run, compile_s, lambda: traces["n"], episode, lambda: (holder["state"], holder["nbr"]))


def ase_md_dynamics(atoms, calc, seed: int = 0):
    """An ASE Langevin NVT (300 K, 1 fs) integrator on a copy of ``atoms`` with ``calc``, one step
    already taken (the initial forces and compilation are outside any timing): time ``dyn.run(k)``,
    k force calls for k steps; successive timings continue the same trajectory."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   fixcm=False, rng=np.random.default_rng(seed))
    dyn.run(1)
    return dyn


def ase_md_run(atoms, calc, n_steps: int, seed: int = 0) -> float:
    """Seconds for ``n_steps`` of ASE Langevin NVT (300 K, 1 fs) with ``calc`` (setup not timed)."""
    dyn = ase_md_dynamics(atoms, calc, seed)
    t0 = time.perf_counter()
    dyn.run(n_steps)
    return time.perf_counter() - t0
