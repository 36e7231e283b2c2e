"""The active-learning loop: select -> label at HF -> retrain multi-fidelity -> repeat, resumably.

``run_loop`` trains a model (``train``: HF structures so far -> Model; the LF data and the trainer
are the caller's, e.g. ``make_trainer``), records its HF test error, chooses ``per_round`` new pool
structures by ``rule`` (``select``), labels them (``label``: pool indices -> labelled HF
structures) and repeats for ``rounds`` rounds. After every round it writes ``round_NN.json`` in
``out_dir`` (labelled pool indices, the test metrics, the next selection, timings) and rewrites
``learning_curve.csv``; a rerun continues after the last round file (its selection is labelled and
the next round trained), so a killed loop loses at most one round.

Labellers: ``withheld_labels`` reveals HF labels withheld from a labelled pool (the evidence in
experiments/active); ``pyscf_labels`` runs ``mfjax.label.runner.label_frames`` at a level of theory
(a user's own pool; resumable through its output file).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import ase
import numpy as np

from mfjax.active.select import select
from mfjax.data import statistics
from mfjax.data.batching import BatchBudget
from mfjax.data.io import read_structures
from mfjax.data.structures import Structure
from mfjax.errors import DataError
from mfjax.label.runner import label_frames
from mfjax.model import Model, ModelSpec
from mfjax.training.ensemble import (
    EnsembleStepCache,
    ensemble_from_pretrained,
    fit_ensemble,
    init_ensemble,
)
from mfjax.training.evaluation import predict_structures
from mfjax.training.setup import example_graph

__all__ = ["force_errors", "make_trainer", "pyscf_labels", "run_loop", "withheld_labels"]


def withheld_labels(labelled_pool: Sequence[Structure]) -> Callable[[Sequence[int]], list[Structure]]:
    """A labeller that reveals the HF structures ``labelled_pool[i]`` (labels withheld until chosen)."""
    return lambda indices: [labelled_pool[int(i)] for i in indices]


def pyscf_labels(pool: Sequence[ase.Atoms], levels, out_path: str | Path, fidelity: str,
                 **kwargs) -> Callable[[Sequence[int]], list[Structure]]:
    """A labeller that computes ``levels`` (``mfjax.label.levels.parse_level``; one level) with pyscf
    for the chosen pool frames, appending to ``out_path`` (``label_frames`` skips frames already
    there), and returns them as HF structures."""

    def label(indices: Sequence[int]) -> list[Structure]:
        frames = []
        for i in indices:
            atoms = pool[int(i)].copy()
            atoms.info.setdefault("structure_id", f"pool-{int(i)}")
            frames.append(atoms)
        label_frames(frames, levels, out_path, fidelities=[fidelity], progress=False, **kwargs)
        done = {s.structure_id: s for s in read_structures(str(out_path), fidelity=fidelity)}
        missing = [a.info["structure_id"] for a in frames if a.info["structure_id"] not in done]
        if missing:
            raise DataError(f"{out_path}: no {fidelity} labels for {missing} after labelling")
        return [done[a.info["structure_id"]] for a in frames]

    return label


def make_trainer(model_config, species: Sequence[int], fidelities: Sequence[str], lf_train: Sequence[Structure],
                 train_cfg, *, steps: int, ensemble: int, budget: BatchBudget, cache: EnsembleStepCache | None = None,
                 start: Model | None = None) -> Callable[[Sequence[Structure], int], Model]:
    """``train(hf, seed) -> Model``: an ensemble of ``ensemble`` members (seeds seed + k) fitted for
    ``steps`` steps on ``lf_train`` + ``hf``, all fits sharing ``cache`` (one compiled step for every
    round and seed). Fresh members (E0, scale, neighbour count from that data), or with ``start``
    (e.g. an LF-pretrained model of the same species and fidelities) its weights with re-drawn
    readout heads per member (``ensemble_from_pretrained``) and E0 refitted on that data."""
    cache = EnsembleStepCache() if cache is None else cache

    def train(hf: Sequence[Structure], seed: int) -> Model:
        data = list(lf_train) + list(hf)
        e0 = statistics.fit_e0(data, species, fidelities, alpha=train_cfg.e0_alpha)
        if start is not None:
            model = ensemble_from_pretrained(start, ensemble, seed, example_graph(data[0], start.spec))
            constants = {**model.variables["constants"],
                         "e0": np.broadcast_to(np.asarray(e0, np.float32), model.variables["constants"]["e0"].shape)}
            model = model.replace(variables={**model.variables, "constants": constants})
        else:
            spec = ModelSpec(model_config, tuple(species), tuple(fidelities),
                             float(statistics.avg_num_neighbors(data, model_config.cutoff)))
            model = init_ensemble(spec, ensemble, seed, example_graph(data[0], spec), e0=e0,
                                  scale=statistics.force_rms(data))
        return fit_ensemble(model, data, [], replace(train_cfg, seed=seed), budget=budget, steps=steps, cache=cache,
                            log=lambda _: None).model

    return train


def force_errors(model: Model, test: Sequence[Structure], budget: BatchBudget | None = None,
                 cache=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per test structure: force MAE (eV/Å), its weight (force components) and |energy error| per
    atom (meV/atom), at each structure's own fidelity."""
    pred = predict_structures(model, test, budget=budget, cache=cache)
    mae = np.array([float(np.abs(p["forces"] - s.forces).mean()) for p, s in zip(pred, test)])
    weights = np.array([3.0 * s.num_atoms for s in test])
    energy = np.array([1000.0 * abs(float(p["energy"]) - float(s.energy)) / s.num_atoms for p, s in zip(pred, test)])
    return mae, weights, energy


def _summary(errors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    mae, weights, energy = errors
    return {"forces_mae_ev_a": float((mae * weights).sum() / weights.sum()), "energy_mae_mev_atom": float(energy.mean()),
            "per_structure_forces_mae": mae.tolist(), "per_structure_energy_mev_atom": energy.tolist()}


def _write_curve(out_dir: Path, records: list[dict]) -> None:
    with open(out_dir / "learning_curve.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "n_hf", "forces_mae_ev_a", "energy_mae_mev_atom", "train_s", "select_s"])
        for r in records:
            writer.writerow([r["round"], r["n_hf"], f"{r['forces_mae_ev_a']:.5f}", f"{r['energy_mae_mev_atom']:.3f}",
                             f"{r['train_s']:.1f}", f"{r['select_s']:.1f}"])


def _rounds_done(out_dir: Path) -> list[dict]:
    records = []
    for r in range(10_000):
        path = out_dir / f"round_{r:02d}.json"
        if not path.is_file():
            break
        records.append(json.loads(path.read_text()))
    return records


def run_loop(out_dir: str | Path, *, pool: Sequence[ase.Atoms], label: Callable[[Sequence[int]], list[Structure]],
             initial: Sequence[int], test: Sequence[Structure], train: Callable[[Sequence[Structure], int], Model],
             rule: str, per_round: int, rounds: int, seed: int = 0, hf: str | None = None, lf: str | None = None,
             evaluate: Callable[[Model, Sequence[Structure]], tuple] = force_errors,
             log: Callable[[str], None] = print) -> list[dict]:
    """Run (or continue) the loop; returns one record per round (see the module docstring).
    ``initial``: pool indices labelled before round 0; round r trains on ``initial`` plus the
    selections of rounds < r; the last round selects nothing."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _rounds_done(out_dir)
    labelled = [int(i) for i in initial]
    for r in records:
        labelled = r["labelled"] + r["selected"]
    hf_structures = label(labelled)
    if records:
        log(f"{out_dir}: resuming after round {len(records) - 1} ({len(labelled)} HF labels)")
    for r in range(len(records), rounds + 1):
        t0 = time.perf_counter()
        model = train(hf_structures, seed)
        metrics = _summary(evaluate(model, test))
        t1 = time.perf_counter()
        chosen: list[int] = []
        if r < rounds:
            taken = set(labelled)
            remaining = [i for i in range(len(pool)) if i not in taken]
            pick = select(model, [pool[i] for i in remaining], min(per_round, len(remaining)), rule, hf=hf, lf=lf,
                          seed=seed * 1000 + r, reference=[pool[i] for i in labelled])
            chosen = [remaining[int(k)] for k in pick.indices]
        record = {"round": r, "rule": rule, "seed": seed, "n_hf": len(labelled), "labelled": labelled,
                  "selected": chosen, **metrics, "train_s": t1 - t0, "select_s": time.perf_counter() - t1}
        tmp = out_dir / f".round_{r:02d}.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(out_dir / f"round_{r:02d}.json")
        records.append(record)
        _write_curve(out_dir, records)
        log(f"{rule} seed {seed} round {r}: {len(labelled)} HF labels, HF force MAE "
            f"{metrics['forces_mae_ev_a']:.4f} eV/Å, energy MAE {metrics['energy_mae_mev_atom']:.2f} meV/atom")
        if chosen:
            labelled = labelled + chosen
            hf_structures = hf_structures + label(chosen)
    return records
