"""The end of a run: best weights -> test table, ``test_metrics.json``, parity plots, model export."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mfjax.training.evaluation import evaluate_batcher
from mfjax.training.metrics import format_table


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def finish_run(s, state, ckpt, result, run: dict, log) -> None:
    """Evaluate the best checkpoint (EMA weights when kept) on the test split and export it."""
    from mfjax.inference import export_model

    best = ckpt.restore("best", state) if ckpt.exists("best") else None
    chosen = "best" if best is not None else "last"
    final_state = best[0] if best is not None else state
    variables = final_state.variables()
    result.best_value, result.best_epoch = run["best_value"], run["best_epoch"]
    run_dir = Path(result.run_dir)
    test = {}
    if len(s.batchers["test"]):
        test, parity = evaluate_batcher(
            s.eval_step, variables, s.batchers["test"], s.data.fidelities, s.n_devices, s.mesh,
            parity=s.cfg.output.plots, device_offset=s.device_offset, n_global_devices=s.n_global_devices,
        )
        log(format_table(test, title=f"test ({chosen} model" + (f", epoch {run['best_epoch']})" if best else ")")))
        if parity is not None and s.n_global_devices == s.n_devices:
            from mfjax.training.plots import parity_plots

            paths = parity_plots(parity, run_dir / "plots")
            log(f"parity plots: {', '.join(str(p) for p in paths)}")
    else:
        log("no test structures: skipping the test table")
    result.test_metrics = test
    import jax

    if jax.process_index() == 0:
        write_json_atomic(run_dir / "test_metrics.json", test)
        if not s.model.exportable:
            log("model is a stand-in (not exportable): no export")
            return
        summary = {
            "epochs": result.epochs_done, "steps": result.global_step, "chosen_checkpoint": chosen,
            "best_metric": s.cfg.train.best_metric, "best_value": run["best_value"], "best_epoch": run["best_epoch"],
            "test_metrics": test, "n_train": len(s.data.train), "n_valid": len(s.data.valid), "n_test": len(s.data.test),
            "statistics": s.model.statistics,
        }
        result.model_dir = export_model(
            run_dir / "model", model_config=s.cfg.model, species=s.model.species, fidelities=s.model.fidelities,
            cutoff=s.cfg.data.cutoff, avg_num_neighbors=s.model.avg_num_neighbors,
            variables=jax.device_get(variables), training=summary,
        )
        log(f"exported the {chosen} model to {result.model_dir}")
