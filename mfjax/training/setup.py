"""Everything a run needs before its first step: data, statistics, model, batchers, mesh, steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from mfjax.config import Config
from mfjax.data.batching import BatchBudget, GraphBatcher, budget_for
from mfjax.data.dataset import LoadedData, load_data
from mfjax.training import loss as loss_lib
from mfjax.training.batches import cast_floats, total_steps
from mfjax.training.optim import make_optimizer
from mfjax.training.sharding import local_batch_count, make_mesh
from mfjax.training.state import TrainState, create_state
from mfjax.training.step import make_eval_step, make_predict_fn, make_train_step


@dataclass
class ModelBundle:
    """A model as training sees it: ``apply_fn(variables, graph, edge_vectors) -> [N]`` atomic
    energies, initial variables, and what an export records."""

    apply_fn: Callable
    variables: dict
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    avg_num_neighbors: float
    statistics: dict[str, Any]
    exportable: bool = True  # False for stand-in models that ``load_model`` cannot rebuild


def build_potential(cfg: Config, data: LoadedData, example, seed: int) -> ModelBundle:
    """The SevenNet-style ``Potential`` with E0, scale and mean neighbour count fitted on train."""
    from mfjax.data import statistics
    from mfjax.nn.model import Potential, init_variables

    e0 = statistics.fit_e0(data.train, data.species, data.fidelities, alpha=cfg.train.e0_alpha)
    scale = statistics.force_rms(data.train)
    avg_nn = statistics.avg_num_neighbors(data.train, cfg.data.cutoff)
    module = Potential(cfg.model, tuple(data.species), tuple(data.fidelities), float(avg_nn))
    variables = init_variables(module, jax.random.PRNGKey(seed), jax.tree.map(np.asarray, example), e0=e0, scale=scale)
    return ModelBundle(
        apply_fn=module.apply, variables=variables, species=tuple(data.species), fidelities=tuple(data.fidelities),
        avg_num_neighbors=float(avg_nn),
        statistics={"e0": np.asarray(e0).tolist(), "scale": float(scale), "avg_num_neighbors": float(avg_nn)},
    )


@dataclass
class RunSetup:
    cfg: Config
    data: LoadedData
    model: ModelBundle
    batchers: dict[str, GraphBatcher]
    budget: BatchBudget
    mesh: Mesh
    n_devices: int  # per-device batches fed by this process per step
    n_global_devices: int
    device_offset: int
    total_steps: int
    optimizer: Any
    schedule: Any
    train_step: Callable
    eval_step: Callable
    compute_stress: bool

    def initial_state(self) -> TrainState:
        return create_state(self.model.variables, self.optimizer, self.cfg.train.seed, self.cfg.train.ema is not None)


def _budget(cfg: Config, data: LoadedData) -> BatchBudget:
    b = cfg.train.batch
    everything = data.train + data.valid + data.test
    derived = budget_for(everything, cfg.data.cutoff, b.max_graphs)
    return BatchBudget(
        n_node=b.max_nodes or derived.n_node, n_edge=b.max_edges or derived.n_edge, n_graph=b.max_graphs + 1
    )


def setup_run(cfg: Config, *, data: LoadedData | None = None, model_builder: Callable | None = None) -> RunSetup:
    """Load data (unless given), build the model (``model_builder(cfg, data, example, seed)``,
    default :func:`build_potential`), batchers over fixed budgets, the mesh and the jitted steps."""
    data = load_data(cfg.data) if data is None else data
    if not data.train:
        from mfjax.errors import DataError

        raise DataError("the training split is empty: add data or lower data.split.valid/test")
    fid_index = data.fidelity_index
    budget = _budget(cfg, data)
    batchers = {
        "train": GraphBatcher(data.train, cfg.data.cutoff, fid_index, budget, shuffle=True, seed=cfg.train.seed),
        "valid": GraphBatcher(data.valid, cfg.data.cutoff, fid_index, budget, shuffle=False),
        "test": GraphBatcher(data.test, cfg.data.cutoff, fid_index, budget, shuffle=False),
    }
    mesh = make_mesh()
    n_local = local_batch_count(mesh)
    n_global = mesh.devices.size
    offset = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()][0]
    example = cast_floats(batchers["train"].batch(batchers["train"].plan(0)[0]))
    model = (model_builder or build_potential)(cfg, data, example, cfg.train.seed)
    steps = total_steps(batchers["train"], cfg.train.epochs, n_global)
    optimizer, schedule = make_optimizer(cfg.train, steps)
    compute_stress = cfg.train.compute_stress
    if compute_stress is None:
        compute_stress = any(s.stress is not None for s in data.train)
    settings = loss_lib.settings_from_config(cfg.train.loss)
    fw = loss_lib.fidelity_weight_vector(data.fidelities, cfg.train.loss.fidelity_weights)
    train_predict = make_predict_fn(model.apply_fn, compute_stress)
    eval_predict = make_predict_fn(
        model.apply_fn, any(s.stress is not None for s in data.valid + data.test) or compute_stress
    )
    return RunSetup(
        cfg=cfg, data=data, model=model, batchers=batchers, budget=budget, mesh=mesh, n_devices=n_local,
        n_global_devices=n_global, device_offset=offset, total_steps=steps, optimizer=optimizer, schedule=schedule,
        train_step=make_train_step(train_predict, optimizer, settings, fw, ema_decay=cfg.train.ema, schedule=schedule, mesh=mesh),
        eval_step=make_eval_step(eval_predict, len(data.fidelities), mesh),
        compute_stress=bool(compute_stress),
    )


