"""Δ-learning (SPEC §5): an LF model plus a Δ model of (HF - LF) energies, forces and stress.

The Δ labels need LF labels on the HF structures: the paired LF frame (same ``structure_id`` and
geometry) when the data has one, else the LF model's prediction (``ablation.delta_labels``: auto,
paired, predicted); the outcome notes say which was used. The sum is one potential:

* in memory, a ``DeltaPair`` (what the ablation evaluates);
* on disk, a bundle of kind "delta" (``export_delta``): ``model.json`` plus two "potential"
  bundles ``base/`` and ``delta/``; ``mfjax.inference.load_model`` returns a :class:`DeltaModel`,
  a ``TrainedModel`` whose ``apply_fn`` adds the two atomic energies, so ``predict``,
  ``evaluate`` (``mfjax evaluate``), ``calculator()`` and the jax-md energy function all work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.structures import Structure
from mfjax.errors import ConfigError, DataError
from mfjax.inference import FORMAT, FORMAT_VERSION, TrainedModel, export_model, load_model, register_kind
from mfjax.strategies.base import Context, Outcome
from mfjax.strategies.data import low_partners
from mfjax.strategies.trainer import Model

__all__ = ["DeltaPair", "DeltaModel", "delta_structures", "export_delta", "run"]


def _with_fidelity_index(graph, index: int):
    """``graph`` with every structure at fidelity ``index`` (the sub-model's own index)."""
    glob = graph.globals
    return graph._replace(globals=glob.replace(fidelity=jnp.full_like(glob.fidelity, index)))


def sum_apply(base_apply: Callable, delta_apply: Callable, base_index: int, delta_index: int) -> Callable:
    """``apply(variables={"base", "delta"}, graph, vectors) -> [N]``: base + Δ atomic energies, each
    sub-model evaluated at its own fidelity index."""

    def apply(variables, graph, vectors):
        e_base = base_apply(variables["base"], _with_fidelity_index(graph, base_index), vectors)
        e_delta = delta_apply(variables["delta"], _with_fidelity_index(graph, delta_index), vectors)
        return e_base + e_delta

    return apply


@dataclass
class DeltaPair:
    """In-memory Δ potential: ``base`` (predicting at ``base_fidelity``) + ``delta``; one fidelity."""

    base: Model
    delta: Model
    base_fidelity: str

    @property
    def fidelities(self) -> tuple[str, ...]:
        return self.delta.fidelities

    @property
    def variables(self) -> dict:
        return {"base": self.base.variables, "delta": self.delta.variables}

    @property
    def components(self) -> list[tuple[Model, str]]:
        """(model, fidelity it predicts at) of each summand (``Trainer`` sums their predictions)."""
        return [(self.base, self.base_fidelity), (self.delta, self.fidelities[0])]

    @property
    def eval_key(self) -> Hashable:
        return ("delta", self.base.spec.key, self.base.fidelities.index(self.base_fidelity), self.delta.spec.key)

    def make_apply(self) -> Callable:
        return sum_apply(self.base.make_apply(), self.delta.make_apply(),
                         self.base.fidelities.index(self.base_fidelity), 0)


def delta_structures(
    hf: Sequence[Structure], low: Sequence[dict[str, Any] | Structure | None], name: str
) -> list[Structure]:
    """HF structures relabelled with HF - LF (energy, forces, stress where both exist).

    low: per structure, the paired LF ``Structure`` or a prediction dict {"energy", "forces",
    "stress"?}. The Δ structures keep the geometry, weights and ids, and get fidelity ``name``.
    """
    out = []
    for h, l in zip(hf, low):
        if l is None:
            raise DataError("no low-fidelity label for a Δ structure", source=h.source, frame=h.index, field="structure_id")
        get = (lambda k: getattr(l, k)) if isinstance(l, Structure) else (lambda k: l.get(k))
        diff = lambda a, b: None if a is None or b is None else np.asarray(a, np.float64) - np.asarray(b, np.float64)  # noqa: E731
        energy = diff(h.energy, get("energy"))
        out.append(replace(h, fidelity=name, energy=None if energy is None else float(energy),
                           forces=diff(h.forces, get("forces")), stress=diff(h.stress, get("stress"))))
    return out


def low_labels(ctx: Context, lf: Model, hf: Sequence[Structure]) -> tuple[list, dict[str, int]]:
    """LF labels of ``hf`` per ``ablation.delta_labels`` and the count of each source."""
    mode = ctx.settings.delta_labels
    partners = low_partners(ctx.data, hf) if mode != "predicted" else [None] * len(hf)
    if mode == "paired" and any(p is None for p in partners):
        missing = next(s for s, p in zip(hf, partners) if p is None)
        raise DataError("delta_labels=paired but this HF frame has no LF partner (structure_id)",
                        source=missing.source, frame=missing.index, field="structure_id")
    need = [k for k, p in enumerate(partners) if p is None]
    labels: list = list(partners)
    if need:
        as_low = [replace(hf[k], fidelity=ctx.data.low) for k in need]
        for k, pred in zip(need, ctx.trainer.predict(lf, as_low)):
            labels[k] = pred
    return labels, {"paired": len(hf) - len(need), "predicted": len(need)}


def _source(counts: dict[str, int]) -> str:
    if counts["predicted"] == 0:
        return "paired"
    return "predicted" if counts["paired"] == 0 else f"paired {counts['paired']} + predicted {counts['predicted']}"


def run(ctx: Context, hf_train: Sequence[Structure], seed: int) -> Outcome:
    d = ctx.data
    lf = ctx.lf_model(seed).model
    train_labels, train_counts = low_labels(ctx, lf, hf_train)
    valid_labels, valid_counts = low_labels(ctx, lf, d.hf_valid)
    train = delta_structures(hf_train, train_labels, d.high)
    valid = delta_structures(d.hf_valid, valid_labels, d.high)
    ctx.log(f"  delta: LF labels of the HF training structures: {_source(train_counts)}; "
            f"validation: {_source(valid_counts)}")
    model = ctx.fresh(ctx.spec((d.high,)), train, seed)
    fitted = ctx.trainer.fit(model, train, valid, steps=ctx.settings.steps.hf, seed=seed, select=d.high,
                             label=f"delta s{seed}")
    notes = {"n_lf_train": len(d.lf_train), "delta_low_labels": _source(train_counts)}
    return Outcome(DeltaPair(lf, fitted.model, d.low), [fitted], notes)


# ---------------------------------------------------------------------------------------------
# the "delta" bundle
# ---------------------------------------------------------------------------------------------
def export_delta(path: str | Path, pair: DeltaPair, cutoff: float, training: dict | None = None) -> Path:
    """Write ``pair`` as one bundle of kind "delta" (atomically: temporary directory, then rename)."""
    import mfjax

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, part in (("base", pair.base), ("delta", pair.delta)):
            export_model(tmp / name, model_config=part.spec.config, species=part.spec.species,
                         fidelities=part.fidelities, cutoff=cutoff, avg_num_neighbors=part.spec.avg_num_neighbors,
                         variables=part.variables)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "delta", "mfjax_version": mfjax.__version__,
            "species": list(pair.base.spec.species), "fidelities": list(pair.fidelities), "cutoff": float(cutoff),
            "base": {"path": "base", "fidelity": pair.base_fidelity}, "delta": {"path": "delta", "fidelity": pair.fidelities[0]},
            "training": json.loads(json.dumps(training or {}, default=str)),
        }
        with open(tmp / "model.json", "w") as handle:
            json.dump(manifest, handle, indent=2)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class DeltaModel(TrainedModel):
    """A loaded "delta" bundle: ``base`` + ``delta`` potentials as one single-fidelity model."""

    kind = "delta"

    def __init__(self, base: TrainedModel, delta: TrainedModel, base_fidelity: str, metadata: dict | None = None):
        if base.cutoff != delta.cutoff or tuple(base.species) != tuple(delta.species):
            raise ConfigError(f"delta bundle: base and Δ models differ in cutoff or species "
                              f"({base.cutoff} vs {delta.cutoff}; {base.species} vs {delta.species})")
        self.base, self.delta = base, delta
        self.config, self.species, self.fidelities = None, tuple(base.species), tuple(delta.fidelities)
        self.cutoff, self.avg_num_neighbors = base.cutoff, base.avg_num_neighbors
        self.dtype, self.metadata = base.dtype, dict(metadata or {})
        self.variables = {"base": base.variables, "delta": delta.variables}
        self._apply = sum_apply(base.apply_fn, delta.apply_fn, base.fidelity_index(base_fidelity), 0)
        self._predict = jax.jit(self._predict_graph)

    def apply_fn(self, variables, graph, edge_vectors):
        """[N] atomic energies: base (at its fidelity) + Δ."""
        return self._apply(variables, graph, edge_vectors)


def _load_delta(path: Path, manifest: dict, precision: str) -> DeltaModel:
    base = load_model(path / manifest["base"]["path"], precision=precision)
    delta = load_model(path / manifest["delta"]["path"], precision=precision)
    return DeltaModel(base, delta, manifest["base"]["fidelity"], metadata=manifest)


register_kind("delta", _load_delta)
