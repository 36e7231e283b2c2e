"""Neighbour lists are computed once per structure per run: reading (validation), the batch budget,
the statistics (mean neighbour count), every batcher (train / valid / test, all epochs) and the
final evaluation reuse the list cached on each structure."""

from __future__ import annotations

from helpers.synthetic import write_synthetic_dataset

from mfjax.config import load_config
from mfjax.data import neighbors
from mfjax.training.loop import train


def test_one_epoch_train_builds_one_neighbour_list_per_structure(tmp_path, monkeypatch):
    raw = write_synthetic_dataset(tmp_path / "data", n_low=24, n_high=8)
    raw["train"]["epochs"] = 1
    raw["output"]["plots"] = False
    cfg = load_config(data=raw)
    calls: list[int] = []
    real = neighbors.neighbor_list

    def counting(positions, cell, pbc, cutoff):
        calls.append(len(positions))
        return real(positions, cell, pbc, cutoff)

    monkeypatch.setattr(neighbors, "neighbor_list", counting)
    result = train(cfg, echo=False)
    assert result.epochs_done == 1
    assert len(calls) == 24 + 8  # one per structure read, none rebuilt by budget, statistics or batchers
