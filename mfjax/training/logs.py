"""Run-directory logs: ``steps.csv`` (one row per optimiser step) and ``metrics.csv`` (per epoch).

Both are truncated to the checkpoint's position on ``--resume`` so that a resumed run's files are
identical to an uninterrupted run's (rows after the checkpoint are recomputed, not duplicated).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mfjax.training.metrics import METRIC_KEYS


def _float(x) -> str:
    return "" if x is None else repr(float(x))


class CsvLog:
    """An append-only CSV file with a fixed header; ``truncate(keep)`` drops rows after a point."""

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.path = Path(path)
        self.header = list(header)
        if not self.path.exists() or self.path.stat().st_size == 0:
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(self.header)

    def rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def truncate(self, keep) -> None:
        """Keep only the rows for which ``keep(row)`` is true (atomic rewrite)."""
        rows = [r for r in self.rows() if keep(r)]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, values: Mapping[str, object]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([values.get(k, "") for k in self.header])
            handle.flush()


def step_log(run_dir: Path, fidelities: Sequence[str]) -> CsvLog:
    header = ["step", "epoch", "batch", "loss"] + [f"loss_{f}" for f in fidelities] + ["grad_norm", "lr", "finite"]
    return CsvLog(run_dir / "steps.csv", header)


def step_row(step: int, epoch: int, batch: int, logs: Mapping, fidelities: Sequence[str]) -> dict:
    row = {"step": step, "epoch": epoch, "batch": batch, "loss": _float(logs["loss"]),
           "grad_norm": _float(logs["grad_norm"]), "lr": _float(logs["lr"]), "finite": int(bool(logs["finite"]))}
    for f, v in zip(fidelities, logs["per_fidelity_loss"]):
        row[f"loss_{f}"] = _float(v)
    return row


def metrics_log(run_dir: Path, fidelities: Sequence[str]) -> CsvLog:
    header = ["epoch", "step", "train_loss"] + [f"train_loss_{f}" for f in fidelities]
    header += [f"valid_{f}_{k}" for f in fidelities for k in METRIC_KEYS] + ["lr", "time_s"]
    return CsvLog(run_dir / "metrics.csv", header)


def metrics_row(epoch: int, step: int, train_loss: float, per_fid: Iterable[float], valid: Mapping,
                fidelities: Sequence[str], lr: float, time_s: float) -> dict:
    row: dict[str, object] = {"epoch": epoch, "step": step, "train_loss": _float(train_loss), "lr": _float(lr),
                              "time_s": f"{time_s:.2f}"}
    for f, v in zip(fidelities, per_fid):
        row[f"train_loss_{f}"] = _float(v)
    for f, metrics in valid.items():
        for k in METRIC_KEYS:
            row[f"valid_{f}_{k}"] = "" if metrics.get(k) is None else metrics[k]
    return row
