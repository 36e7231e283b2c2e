"""What ``mfjax train`` decides before its first step: the batch budget, the initial model (E0,
scale and mean neighbour count fitted on the training split, into ``ModelSpec`` / ``spec.init``)
and the fidelity whose validation metric selects the best weights."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mfjax.config import Config, TrainConfig
from mfjax.data import statistics
from mfjax.data.batching import BatchBudget, pad_graph, run_budget, structures_to_graph
from mfjax.data.dataset import LoadedData
from mfjax.data.graph import cast_floats
from mfjax.data.structures import Structure
from mfjax.errors import ConfigError
from mfjax.model import Model, ModelSpec
from mfjax.training.ensemble import init_ensemble

__all__ = ["batch_budget", "example_graph", "initial_model", "best_fidelity"]


def batch_budget(cfg: Config, structures: Sequence[Structure]) -> BatchBudget:
    """``train.batch`` over ``structures`` (every structure the run batches)."""
    b = cfg.train.batch
    return run_budget(structures, cfg.data.cutoff, b.max_graphs, b.max_nodes, b.max_edges)


def example_graph(structure: Structure, spec: ModelSpec, dtype=np.float32):
    """A small padded float32 graph of one structure (what ``spec.init`` traces the network with)."""
    graph = structures_to_graph([structure], spec.cutoff, {structure.fidelity: 0})
    return cast_floats(pad_graph(graph, structure.num_atoms + 1, max(len(graph.senders), 1), 2), dtype)


def initial_model(cfg: Config, data: LoadedData) -> tuple[Model, dict]:
    """A fresh ``Potential`` for ``data`` (seed ``train.seed``) and its statistics {e0, scale,
    avg_num_neighbors}: E0 per fidelity by ridge (``train.e0_alpha``), scale = force RMS and the
    mean neighbour count, all over the training split. With ``train.ensemble`` K: an ensemble of K
    fresh members (seeds ``train.seed + k``)."""
    e0 = statistics.fit_e0(data.train, data.species, data.fidelities, alpha=cfg.train.e0_alpha)
    scale = statistics.force_rms(data.train)
    avg_nn = float(statistics.avg_num_neighbors(data.train, cfg.data.cutoff))
    spec = ModelSpec(cfg.model, tuple(data.species), tuple(data.fidelities), avg_nn)
    example = example_graph(data.train[0], spec)
    stats = {"e0": np.asarray(e0).tolist(), "scale": float(scale), "avg_num_neighbors": avg_nn}
    if cfg.train.ensemble is not None:
        return init_ensemble(spec, cfg.train.ensemble, cfg.train.seed, example, e0=e0, scale=scale), stats
    return Model(spec, spec.init(cfg.train.seed, example, e0=e0, scale=scale)), stats


def best_fidelity(train_cfg: TrainConfig, data: LoadedData) -> tuple[str, str]:
    """(fidelity whose ``best_metric`` selects the best weights, why): ``train.best_fidelity``, else
    the fidelity with the fewest training frames (the scarce high fidelity of a multi-fidelity run)."""
    if train_cfg.best_fidelity is not None:
        if train_cfg.best_fidelity not in data.fidelities:
            raise ConfigError(f"train.best_fidelity {train_cfg.best_fidelity!r} is not a fidelity of the data; "
                              f"available: {list(data.fidelities)}")
        return train_cfg.best_fidelity, "train.best_fidelity"
    counts = {name: 0 for name in data.fidelities}
    for s in data.train:
        counts[s.fidelity] += 1
    name = min([f for f in data.fidelities if counts[f]] or data.fidelities, key=lambda f: counts[f])
    return name, f"fewest training frames ({counts[name]}; set train.best_fidelity to choose)"
