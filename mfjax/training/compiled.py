"""Compiled train and evaluation steps, cached by what changes their code.

Compiling a train step costs far more on a CPU than running a few hundred of them, and an ablation
trains dozens of models of one architecture. Nothing run-specific is baked into a compiled step:
the learning-rate schedule lives in the optimiser state (``optim``), E0 and the scale in the
model's constants, the step budget on the host. So every run of one *kind* — the model's
``key`` (architecture, species, number of fidelities, mean neighbour count), the optimiser's code,
EMA, loss settings, per-fidelity weights, trainable groups, stress, mesh — reuses one step.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Mapping, Sequence

import jax
from jax.sharding import Mesh

from mfjax.model import Model
from mfjax.training import loss as loss_lib
from mfjax.training.optim import make_optimizer, optimizer_key
from mfjax.training.step import make_eval_step, make_predict_fn, make_train_step

__all__ = ["StepCache"]


def _mesh_key(mesh: Mesh | None) -> Hashable:
    return None if mesh is None else tuple(d.id for d in mesh.devices.flat)


class StepCache:
    """Jitted steps shared by the fits and evaluations that use this cache.

    ``compilations`` counts the distinct steps built; ``compile_seconds`` adds up the wall time of
    their first calls (trace + compile + one run).
    """

    def __init__(self) -> None:
        self._steps: dict[Hashable, Callable] = {}
        self.compilations = 0
        self.compile_seconds = 0.0

    def train_step(
        self, model: Model, train_cfg, *, fidelity_weights: Mapping[str, float], trainable: Sequence[str] | None,
        compute_stress: bool, mesh: Mesh | None,
    ) -> Callable:
        """``(state, batch) -> (state, logs)`` for ``model`` with ``train_cfg``'s optimiser and loss;
        ``fidelity_weights`` by name (1 where not given)."""
        fw = loss_lib.fidelity_weight_vector(model.fidelities, dict(fidelity_weights))
        settings = loss_lib.settings_from_config(train_cfg.loss)
        trainable = None if trainable is None else tuple(sorted(trainable))
        key = ("train", model.key, optimizer_key(train_cfg), train_cfg.ema, settings, tuple(fw.tolist()), trainable,
               bool(compute_stress), _mesh_key(mesh))
        if key not in self._steps:
            optimizer, _ = make_optimizer(train_cfg, 1)  # the schedule's numbers come from the state
            predict = make_predict_fn(model.apply_fn, bool(compute_stress))
            mask = model.spec.fidelity_weight_mask if settings.fidelity_l2 else None
            step = make_train_step(predict, optimizer, settings, fw, ema_decay=train_cfg.ema, trainable=trainable,
                                   mesh=mesh, fidelity_mask=mask)
            self._steps[key] = self._timed(step)
        return self._steps[key]

    def eval_step(self, model: Model, *, compute_stress: bool, mesh: Mesh | None) -> Callable:
        """``(variables, batch) -> (metric sums, predictions)`` for ``model`` (a Δ model too)."""
        key = ("eval", model.key, bool(compute_stress), _mesh_key(mesh))
        if key not in self._steps:
            predict = make_predict_fn(model.apply_fn, bool(compute_stress))
            self._steps[key] = self._timed(make_eval_step(predict, len(model.fidelities), mesh))
        return self._steps[key]

    def cache_sizes(self) -> list[int]:
        """Compiled variants of every step (1 each when nothing recompiled)."""
        return [fn.jitted._cache_size() for fn in self._steps.values()]

    def _timed(self, fn: Callable) -> Callable:
        """``fn`` whose first call is added to ``compile_seconds`` (``fn.jitted`` is the jitted step)."""
        self.compilations += 1
        first = [True]

        def call(*args):
            if not first[0]:
                return fn(*args)
            first[0] = False
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            self.compile_seconds += time.perf_counter() - t0
            return out

        call.jitted = fn  # type: ignore[attr-defined]
        return call

