"""The training loss of SPEC §4, written as per-fidelity sums and counts.

Every term is an elementwise Huber (or squared) error averaged over the *labelled* elements of the
batch: energy per atom (eV/atom), force components (eV/Å) and stress components in kbar (Voigt-6).
Each element carries the weight of its structure, ``graph.globals.weight[:, k]`` (the dataset's
per-label weight) times ``fidelity_weights[fidelity]``; the denominators are plain counts of
labelled elements, so a weight of 7 makes a structure count 7 times. Padding graphs and missing
labels contribute neither to sums nor to counts.

The functions return sums and counts rather than means so that a data-parallel step can add them
over devices *before* dividing: the sharded loss then equals the single-device loss on the same
graphs exactly (up to float summation order).

``train.loss.fidelity_share`` fixes the expected share of each fidelity in the loss instead of its
weight: :func:`share_weights` turns shares and training-set frame counts into per-fidelity weights
(``fidelity_weights``) whatever the ratio of the fidelities' data sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import Graph, node_graph_index
from mfjax.errors import ConfigError

KBAR_PER_EV_A3 = 1602.1766208
GPA_PER_EV_A3 = 160.21766208
_VOIGT = (np.array([0, 1, 2, 1, 0, 0]), np.array([0, 1, 2, 2, 2, 1]))
TERMS = ("energy", "forces", "stress")

Array = jax.Array


@dataclass(frozen=True)
class LossSettings:
    """Static (hashable) loss settings; built from ``train.loss`` by :func:`settings_from_config`."""

    kind: str = "huber"
    delta: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.01
    fidelity_l2: float = 0.0  # L2 penalty on the fidelity-specific weights (added in training.step)


def settings_from_config(loss_cfg) -> LossSettings:
    return LossSettings(
        kind=loss_cfg.kind,
        delta=float(loss_cfg.delta),
        energy_weight=float(loss_cfg.energy_weight),
        forces_weight=float(loss_cfg.forces_weight),
        stress_weight=float(loss_cfg.stress_weight),
        fidelity_l2=float(loss_cfg.fidelity_l2),
    )


def fidelity_weight_vector(fidelities: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """[n_fid] per-fidelity structure weights (1 where not given). Unknown names are an error."""
    unknown = sorted(set(weights) - set(fidelities))
    if unknown:
        raise ConfigError(
            f"train.loss.fidelity_weights names unknown fidelities {unknown}; available: {list(fidelities)}"
        )
    return np.array([float(weights.get(f, 1.0)) for f in fidelities], dtype=np.float32)


def share_weights(counts: Mapping[str, int], share: Mapping[str, float],
                  where: str = "train.loss.fidelity_share") -> dict[str, float]:
    """Per-fidelity structure weights that give each fidelity its ``share`` of the weighted frames.

    counts: training frames per fidelity; share: fidelity -> share in (0, 1]. With weights w_f,
    fidelity f holds w_f n_f / sum_g w_g n_g of the weighted frames, hence (in expectation over
    shuffled batches, for fidelities with similar per-frame errors and sizes) that share of the
    loss. Named fidelities get w_f = share_f N / n_f (N = all frames, so the mean weight is 1);
    fidelities not named share the rest, 1 - sum(share), in proportion to their frame counts (one
    common weight). With frames of one fidelity only there is nothing to share: every weight is 1.
    """
    unknown = sorted(set(share) - set(counts))
    if unknown:
        raise ConfigError(f"{where} names unknown fidelities {unknown}; available: {sorted(counts)}")
    present = {f: int(n) for f, n in counts.items() if n > 0}
    weights = {f: 1.0 for f in counts}
    if len(present) <= 1:
        return weights
    empty = sorted(f for f in share if f not in present)
    if empty:
        raise ConfigError(f"{where} names {empty}, which have no training frames")
    total = sum(present.values())
    named = sum(float(share[f]) for f in share)
    rest = [f for f in present if f not in share]
    if rest and named >= 1.0:
        raise ConfigError(f"{where}: the shares sum to {named:g}, leaving nothing for {rest}")
    if not rest and abs(named - 1.0) > 1e-6:
        raise ConfigError(f"{where} names every fidelity of the training data: the shares must sum to 1, got {named:g}")
    for f in share:
        weights[f] = float(share[f]) * total / present[f]
    if rest:
        common = (1.0 - named) * total / sum(present[f] for f in rest)
        weights.update({f: common for f in rest})
    return weights


def fidelity_counts(fidelities: Sequence[str], structures) -> dict[str, int]:
    """{fidelity: number of ``structures`` of it} for every name in ``fidelities``."""
    counts = {f: 0 for f in fidelities}
    for s in structures:
        counts[s.fidelity] = counts.get(s.fidelity, 0) + 1
    return counts


def resolve_fidelity_weights(loss_cfg, fidelities: Sequence[str], structures) -> tuple[dict[str, float], str]:
    """(per-fidelity weights, how they were chosen) for training on ``structures``:
    ``loss_cfg.fidelity_share`` through :func:`share_weights`, else ``loss_cfg.fidelity_weights``."""
    if loss_cfg.fidelity_share:
        counts = fidelity_counts(fidelities, structures)
        weights = share_weights(counts, loss_cfg.fidelity_share)
        shown = ", ".join(f"{f} {weights[f]:.4g} ({counts[f]} frames)" for f in fidelities)
        return weights, f"fidelity weights from train.loss.fidelity_share {dict(loss_cfg.fidelity_share)}: {shown}"
    return dict(loss_cfg.fidelity_weights), "train.loss.fidelity_weights"


def elementwise(error: Array, kind: str, delta: float) -> Array:
    """Huber (quadratic below ``delta``, linear above) or squared error, elementwise."""
    if kind == "mse":
        return error**2
    abs_err = jnp.abs(error)
    quad = jnp.minimum(abs_err, delta)
    return 0.5 * quad**2 + delta * (abs_err - quad)


def voigt(tensor: Array) -> Array:
    """[..., 3, 3] -> [..., 6] in the order xx, yy, zz, yz, xz, xy."""
    return tensor[..., _VOIGT[0], _VOIGT[1]]


def graph_fidelity_and_masks(graph: Graph) -> tuple[Array, Array, Array]:
    """(fidelity [G], node_graph [N], real-node mask [N])."""
    node_graph = node_graph_index(graph)
    return graph.globals.fidelity, node_graph, graph.globals.graph_mask[node_graph]


def loss_sums(
    pred: Mapping[str, Array],
    graph: Graph,
    fidelity_weights: Array,
    settings: LossSettings,
) -> dict[str, Array]:
    """Per-fidelity weighted loss sums and label counts of one (padded) graph.

    pred: {"energy": [G], "forces": [N, 3], optionally "stress": [G, 3, 3]} in eV, eV/Å, eV/Å^3.
    fidelity_weights: [n_fid] weights of each fidelity's structures.
    Returns {"energy_sum", "energy_count", "forces_sum", ...}, each [n_fid].
    """
    n_fid = fidelity_weights.shape[0]
    glob = graph.globals
    fid, node_graph, node_real = graph_fidelity_and_masks(graph)
    dtype = pred["energy"].dtype
    gw = glob.weight.astype(dtype) * fidelity_weights.astype(dtype)[fid][:, None]  # [G, 3]
    seg = lambda x, ids: jax.ops.segment_sum(x, ids, num_segments=n_fid)  # noqa: E731
    out: dict[str, Array] = {}

    n_atoms = jnp.maximum(graph.n_node, 1).astype(dtype)
    e_mask = (glob.energy_mask & glob.graph_mask).astype(dtype)
    e_err = (pred["energy"] - glob.energy.astype(dtype)) / n_atoms
    e_err = jnp.where(e_mask > 0, e_err, 0.0)
    out["energy_sum"] = seg(elementwise(e_err, settings.kind, settings.delta) * gw[:, 0] * e_mask, fid)
    out["energy_count"] = seg(e_mask, fid)

    f_mask = (graph.nodes.forces_mask & node_real).astype(dtype)
    f_err = jnp.where(f_mask[:, None] > 0, pred["forces"] - graph.nodes.forces.astype(dtype), 0.0)
    f_loss = elementwise(f_err, settings.kind, settings.delta).sum(-1) * f_mask * gw[node_graph, 1]
    node_fid = fid[node_graph]
    out["forces_sum"] = seg(f_loss, node_fid)
    out["forces_count"] = seg(3.0 * f_mask, node_fid)

    s_mask = (glob.stress_mask & glob.graph_mask).astype(dtype)
    if "stress" in pred:
        s_err = voigt(pred["stress"] - glob.stress.astype(dtype)) * KBAR_PER_EV_A3
        s_err = jnp.where(s_mask[:, None] > 0, s_err, 0.0)
        s_loss = elementwise(s_err, settings.kind, settings.delta).sum(-1) * s_mask * gw[:, 2]
        out["stress_sum"] = seg(s_loss, fid)
        out["stress_count"] = seg(6.0 * s_mask, fid)
    else:
        out["stress_sum"] = jnp.zeros(n_fid, dtype)
        out["stress_count"] = jnp.zeros(n_fid, dtype)
    return out


def _safe_mean(total: Array, count: Array) -> Array:
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def combine(sums: Mapping[str, Array], settings: LossSettings) -> tuple[Array, Array]:
    """(total loss [], per-fidelity loss [n_fid]) from (device-summed) sums and counts.

    total = w_E * mean_E + w_F * mean_F + w_S * mean_S over all fidelities; the per-fidelity loss
    applies the same formula to that fidelity's elements only (for logging).
    """
    weights = {"energy": settings.energy_weight, "forces": settings.forces_weight, "stress": settings.stress_weight}
    total = 0.0
    per_fid = 0.0
    for term in TERMS:
        s, c = sums[f"{term}_sum"], sums[f"{term}_count"]
        total = total + weights[term] * _safe_mean(s.sum(), c.sum())
        per_fid = per_fid + weights[term] * _safe_mean(s, c)
    return jnp.asarray(total), jnp.asarray(per_fid)
