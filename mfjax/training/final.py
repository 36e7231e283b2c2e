"""The end of a run: best weights -> test table, ``test_metrics.json``, parity plots, model export."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import jax
from jax.sharding import Mesh

from mfjax.config import Config
from mfjax.data.batching import BatchBudget
from mfjax.data.structures import Structure
from mfjax.training.compiled import StepCache
from mfjax.training.evaluation import evaluate
from mfjax.training.fit import FitResult
from mfjax.training.metrics import format_table
from mfjax.training.plots import parity_plots

__all__ = ["finish_run", "write_json_atomic"]


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def finish_run(
    cfg: Config, result: FitResult, test: Sequence[Structure], budget: BatchBudget, summary: dict, *,
    cache: StepCache | None, mesh: Mesh | None, plots: bool, log: Callable[[str], None],
) -> tuple[dict, Path | None]:
    """Evaluate the fit's model (best weights, EMA when kept) on ``test``, write the table,
    ``test_metrics.json``, parity plots (``plots``) and export the model; (test metrics, model dir)."""
    run_dir = Path(cfg.output.dir)
    chosen = result.kept
    metrics: dict = {}
    if test:
        metrics, parity = evaluate(result.model, test, budget=budget, cache=cache, mesh=mesh, parity=True) if plots \
            else (evaluate(result.model, test, budget=budget, cache=cache, mesh=mesh), None)
        where = f", epoch {result.best_epoch})" if chosen == "best" else ")"
        log(format_table(metrics, title=f"test ({chosen} model{where}"))
        if parity is not None:
            paths = parity_plots(parity, run_dir / "plots")
            log(f"parity plots: {', '.join(str(p) for p in paths)}")
    else:
        log("no test structures: skipping the test table")
    model_dir = None
    if jax.process_index() == 0:
        write_json_atomic(run_dir / "test_metrics.json", metrics)
        model_dir = result.model.export(run_dir / "model",
                                        training={**summary, "chosen_checkpoint": chosen, "test_metrics": metrics})
        log(f"exported the {chosen} model to {model_dir}")
    return metrics, model_dir
