"""The jit-compiled, data-parallel training and evaluation steps (pure functions of state and batch).

A batch is a ``Graph`` whose arrays carry a leading device axis D (see ``sharding.py``). The step
maps the per-device prediction and loss *sums* over that axis (``jax.shard_map`` over the mesh,
each device's graph without a batch axis; see ``_per_device``), adds the sums over devices and only then
divides (``loss.combine``), so one sharded step on D devices equals the single-device step on the
same D padded graphs. Gradients of the replicated parameters are summed over devices once, by the
transpose of ``shard_map``; nothing is averaged twice.

Non-finite guard: when the loss or the gradient norm is not finite the whole state is kept as it
was (``jnp.where`` per leaf) and ``finite`` is False in the returned logs.

``train.loss.fidelity_l2`` > 0 adds ``fidelity_l2 * sum(mask * w^2)`` over the fidelity-specific
weights (``fidelity_mask(params)``, e.g. ``ModelSpec.fidelity_weight_mask``) to the loss, once per
step (not per device); the logged ``loss`` includes it, ``per_fidelity_loss`` does not.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mfjax import physics
from mfjax.data.graph import Graph
from mfjax.training import loss as loss_lib
from mfjax.training.metrics import metric_sums
from mfjax.training.optim import ema_update, learning_rate
from mfjax.training.sharding import batch_sharding, replicated
from mfjax.training.state import TrainState

PredictFn = Callable[[Mapping[str, Any], Graph], Mapping[str, jax.Array]]


def make_predict_fn(apply_fn: Callable, compute_stress: bool) -> PredictFn:
    """``(variables, graph) -> {"energy", "forces"[, "stress"]}`` via ``mfjax.physics.predict``."""

    def predict_fn(variables, graph):
        return physics.predict(apply_fn, variables, graph, compute_stress=compute_stress)

    return predict_fn


def _per_device(fn, mesh: Mesh | None, in_axes):
    """``fn`` mapped over the leading device axis D of the arguments whose in_axes is 0.

    Each device computes its own slice of D without a size-1 batch dimension: where a device holds
    one graph the axis is squeezed and ``fn`` called directly (a size-1 vmap axis costs XLA's CPU
    backend layout copies around every gather and scatter, ~30 % of a training step). With a mesh
    this runs under ``jax.shard_map`` over the "data" axis (per-device outputs stacked along D; the
    caller's sum over D is the cross-device reduction, and autodiff sums the gradient of the
    replicated arguments over devices exactly once).
    """

    def local(*args):
        sizes = {jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0}
        if sizes != {1}:
            return jax.vmap(fn, in_axes=in_axes)(*args)
        squeezed = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a for a, ax in zip(args, in_axes)]
        return jax.tree.map(lambda x: x[None], fn(*squeezed))

    if mesh is None:
        return local
    specs = tuple(P("data") if ax == 0 else P() for ax in in_axes)
    # check_vma=False: ``physics.predict`` differentiates w.r.t. a strain built from zeros inside
    # the per-device function; with JAX's varying-manual-axes checks on, that array is
    # device-invariant and the transpose sums its gradient over devices, so every device's stress
    # (and the loss) came out summed over the mesh (tests/test_training_step.py caught it). With
    # the checks off the sharded step equals the single-device step to float rounding.
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("data"), check_vma=False)


MaskFn = Callable[[Any], Any]


def fidelity_l2_penalty(params: Any, mask: Any) -> jax.Array:
    """[] sum over leaves of sum(mask * w^2); ``mask`` is a pytree like ``params`` of 0/1 arrays
    (leaves whose mask is all zero add nothing and cost nothing)."""
    leaves, masks = jax.tree.leaves(params), jax.tree.leaves(mask)
    assert len(leaves) == len(masks), (len(leaves), len(masks))
    terms = [jnp.sum(jnp.asarray(m, w.dtype) * w * w) for w, m in zip(leaves, masks) if np.any(m)]
    dtype = leaves[0].dtype if leaves else jnp.float32
    return sum(terms, jnp.zeros((), dtype))


def make_loss_fn(predict_fn: PredictFn, settings: loss_lib.LossSettings, fidelity_weights: np.ndarray, mesh=None,
                 fidelity_mask: MaskFn | None = None):
    """``(params, constants, batch[D]) -> (loss, (per_fidelity_loss, sums))``.

    fidelity_mask: ``params -> 0/1 pytree`` of the fidelity-specific weights, required when
    ``settings.fidelity_l2`` > 0 (names and shapes only: it is evaluated at trace time).
    """
    fw = jnp.asarray(fidelity_weights)
    if settings.fidelity_l2 and fidelity_mask is None:
        raise ValueError("make_loss_fn: settings.fidelity_l2 > 0 needs fidelity_mask (the fidelity-specific weights)")

    def device_sums(params, constants, graph):
        pred = predict_fn({"params": params, "constants": constants}, graph)
        return loss_lib.loss_sums(pred, graph, fw, settings)

    def loss_fn(params, constants, batch):
        sums = _per_device(device_sums, mesh, (None, None, 0))(params, constants, batch)
        sums = jax.tree.map(lambda x: x.sum(0), sums)
        total, per_fid = loss_lib.combine(sums, settings)
        if settings.fidelity_l2:
            total = total + settings.fidelity_l2 * fidelity_l2_penalty(params, fidelity_mask(params))
        return total, (per_fid, sums)

    return loss_fn


def _where_tree(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _only(trainable: tuple[str, ...] | None, new, old):
    """``new`` in the top-level param groups of ``trainable`` (all when None), ``old`` elsewhere."""
    if trainable is None or new is None:
        return new
    return {k: (v if k in trainable else old[k]) for k, v in new.items()}


def make_train_step(
    predict_fn: PredictFn,
    optimizer: optax.GradientTransformation,
    settings: loss_lib.LossSettings,
    fidelity_weights: np.ndarray,
    *,
    ema_decay: float | None = None,
    trainable: tuple[str, ...] | None = None,
    mesh: Mesh | None = None,
    state_sharding=None,
    donate: bool = True,
    fidelity_mask: MaskFn | None = None,
):
    """A jitted ``(state, batch) -> (state, logs)``; logs hold loss, per_fidelity_loss [n_fid],
    grad_norm, lr (the learning rate of this update, read from the optimiser state), finite and the
    per-fidelity label counts.

    trainable: top-level param groups that train (None = all): the others get a zero gradient, no
    update (not even weight decay) and an unchanged EMA — a frozen backbone stays bit-identical.
    fidelity_mask: see ``make_loss_fn`` (needed with ``settings.fidelity_l2`` > 0).
    """
    loss_fn = make_loss_fn(predict_fn, settings, fidelity_weights, mesh, fidelity_mask)

    def step(state: TrainState, batch: Graph):
        (loss, (per_fid, sums)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.constants, batch
        )
        grads = _only(trainable, grads, jax.tree.map(jnp.zeros_like, grads))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = _only(trainable, optax.apply_updates(state.params, updates), state.params)
        ema = None if state.ema is None else _only(trainable, ema_update(state.ema, params, ema_decay, state.step), state.ema)
        rng, _ = jax.random.split(state.rng)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = state.replace(params=params, opt_state=opt_state, ema=ema, step=state.step + 1, rng=rng)
        new = _where_tree(finite, new, state)
        logs = {
            "loss": loss,
            "per_fidelity_loss": per_fid,
            "grad_norm": grad_norm,
            "finite": finite,
            "lr": jnp.asarray(learning_rate(state.opt_state), jnp.float32),
            "counts": sums["energy_count"] + sums["forces_count"] + sums["stress_count"],
        }
        return new, logs

    kwargs: dict = {"donate_argnums": (0,)} if donate else {}
    if mesh is not None:
        rep = replicated(mesh)
        st = rep if state_sharding is None else state_sharding
        kwargs.update(in_shardings=(st, batch_sharding(mesh)), out_shardings=(st, rep))
    return jax.jit(step, **kwargs)


def make_eval_step(predict_fn: PredictFn, n_fidelities: int, mesh: Mesh | None = None):
    """A jitted ``(variables, batch[D]) -> (metric sums [n_fid], predictions [D, ...])``."""

    def device_eval(variables, graph):
        pred = predict_fn(variables, graph)
        return metric_sums(pred, graph, n_fidelities), pred

    def evaluate(variables, batch):
        sums, pred = _per_device(device_eval, mesh, (None, 0))(variables, batch)
        return jax.tree.map(lambda x: x.sum(0), sums), pred

    kwargs: dict = {}
    if mesh is not None:
        rep = replicated(mesh)
        kwargs.update(in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, batch_sharding(mesh)))
    return jax.jit(evaluate, **kwargs)


