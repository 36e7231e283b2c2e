"""Run strategies over HF fractions and seeds; evaluate every model on the same test sets.

``ablate(cfg, settings, out_dir)`` writes into ``out_dir``:

* ``results.csv``: one row per (strategy, HF fraction, seed) with HF test metrics (covered region,
  ``hf_test_*``), HF metrics per named test region (``ablation.regions``: ``hf_<region>_*``), LF
  test metrics where the model predicts the LF fidelity, the training time and notes (e.g. where
  the Δ model's LF labels came from); plus one ``lf_model`` row per seed (the shared LF model
  evaluated on the HF sets: the "no HF data" line);
* ``errors/<strategy>_f<fraction>_s<seed>.npz``: per-structure errors of every run on every HF
  test region (``mfjax.strategies.errors``), the input of the paired comparisons;
* ``results.md`` (mean ± std over seeds, then the paired differences with bootstrap 95 % intervals
  and verdicts, ``mfjax.strategies.paired``) and ``learning_curves.png`` (interval bands);
* ``summary.json`` (data sizes, settings, timings, the paired differences) and, with
  ``ablation.export``, every model under ``runs/<strategy>_f<fraction>_s<seed>/model`` (a "delta"
  bundle for delta).

Every stage checkpoints into ``OUT/stages/`` (``base.Context``). ``resume=True`` keeps the rows of
an existing ``results.csv``, runs only the missing ones and continues a killed stage from its last
checkpoint; the checkpoints of a run are removed once its row is written (the LF models' stay).

Safe resume (``mfjax.training.runstate``): ``config.yaml`` (the resolved config with its
``ablation:`` section, written once), ``data_fingerprint.json`` and ``resume_log.jsonl``. A start
without ``resume`` into a directory with a ``results.csv`` is refused unless ``overwrite`` (which
removes the ablation's own files first); ``resume`` refuses changed data, split, model, training
settings and stage budgets (``ablation.steps``), and allows (and logs) more strategies, fractions
or seeds, logging and checkpoint intervals.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mfjax.config import Config
from mfjax.data.dataset import LoadedData
from mfjax.strategies import append, delta, hf_only, multi_fidelity, paired, report, transfer
from mfjax.strategies.base import Context, Outcome
from mfjax.strategies.data import prepare_data
from mfjax.strategies.errors import run_errors, run_tag, save_errors
from mfjax.strategies.settings import AblationSettings
from mfjax.training import runstate
from mfjax.training.sharding import init_distributed, is_main_process, sync_processes
from mfjax.utils.configtools import to_dict

__all__ = ["RUNNERS", "ablate", "run_strategy", "OUTPUT_ENTRIES"]

#: The files of an ablation directory (what ``overwrite`` removes; nothing else is touched).
OUTPUT_ENTRIES = (runstate.CONFIG, runstate.FINGERPRINT, runstate.RESUME_LOG, "results.csv", "results.md",
                  "learning_curves.png", "summary.json", "runs/*_f*_s*", "stages", "errors")
#: Left by an unfinished start (no results.csv yet); a fresh start removes them.
STALE_ENTRIES = (runstate.CONFIG, runstate.FINGERPRINT, runstate.RESUME_LOG, "stages", "errors")

#: name -> ``run(ctx, hf_train, seed) -> Outcome``
RUNNERS: dict[str, Callable[[Context, list, int], Outcome]] = {
    "hf_only": hf_only.run,
    "transfer": transfer.run,
    "delta": delta.run,
    "multi_fidelity": multi_fidelity.run,
    "multi_fidelity_heads": multi_fidelity.run_heads,
    "append": append.run,
}


def run_strategy(ctx: Context, name: str, fraction: float, seed: int) -> tuple[Outcome, dict]:
    """Train strategy ``name`` on the HF subset of (fraction, seed); evaluate it; one results row."""
    hf_train = ctx.data.hf_subset(fraction, seed)
    ctx.run_tag = run_tag(name, fraction, seed)
    try:
        outcome = RUNNERS[name](ctx, hf_train, seed)
    finally:
        ctx.run_tag = None
    row = {"strategy": name, "hf_fraction": fraction, "seed": seed, "n_hf_train": len(hf_train),
           "n_lf_train": outcome.notes.get("n_lf_train", 0), "steps": outcome.steps,
           "train_seconds": round(outcome.seconds, 1),
           # equal budgets (settings.Budget): every strategy has budget_steps in all; ``steps`` counts the
           # shared LF pre-training too; hf_seen = HF structures in the batches of every step
           "budget_steps": ctx.settings.budget.total_steps, "hf_seen": outcome.seen(ctx.data.high),
           "best_step": outcome.best_step,
           "best_valid": None if outcome.best_valid is None else round(float(outcome.best_valid), 6),
           "final_valid": None if outcome.final_valid is None else round(float(outcome.final_valid), 6),
           "stopped_early": int(outcome.stopped_early),
           "compile_seconds": round(outcome.compile_seconds, 1)}
    row.update(evaluate_outcome(ctx, outcome))
    notes = {k: v for k, v in outcome.notes.items() if k != "n_lf_train"}
    row["notes"] = json.dumps(notes, sort_keys=True) if notes else ""
    return outcome, row


def evaluate_outcome(ctx: Context, outcome: Outcome) -> dict:
    """Columns of the HF test, every HF test region and (if the model has the LF fidelity) LF test metrics."""
    d = ctx.data
    cols = {}
    for region, frames in d.test_sets().items():
        cols.update(report.metric_columns(report.region_prefix(region), ctx.evaluate(outcome.model, frames).get(d.high)))
    lf = ctx.evaluate(outcome.model, d.lf_test).get(d.low) if outcome.low is not None else None
    cols.update(report.metric_columns("lf_test", lf))
    return cols


def _lf_row(ctx: Context, seed: int) -> dict:
    """The shared LF model as an HF surrogate (HF frames predicted at the LF fidelity) and on LF test."""
    d = ctx.data
    fitted = ctx.lf_model(seed)
    as_low = lambda ss: [replace(s, fidelity=d.low) for s in ss]  # noqa: E731
    row = {"strategy": "lf_model", "hf_fraction": 0.0, "seed": seed, "n_hf_train": 0, "n_lf_train": len(d.lf_train),
           "steps": fitted.steps, "train_seconds": round(fitted.seconds, 1),
           "notes": json.dumps({"energies": "LF reference energies: not comparable with HF energies"})}
    for region, frames in d.test_sets().items():
        row.update(report.metric_columns(report.region_prefix(region), ctx.evaluate(fitted.model, as_low(frames)).get(d.low)))
    row.update(report.metric_columns("lf_test", ctx.evaluate(fitted.model, d.lf_test).get(d.low)))
    return row


def ablate(
    cfg: Config,
    settings: AblationSettings,
    out_dir: str | Path,
    *,
    loaded: LoadedData | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the ablation of ``settings`` on the data of ``cfg`` into ``out_dir``; returns the rows.
    ``resume``: keep finished rows and continue; ``overwrite``: replace earlier results."""
    t_start = time.perf_counter()
    init_distributed(cfg.train.distributed)
    out = Path(out_dir)
    # a start without --resume and without finished results also drops stale stage checkpoints
    runstate.prepare_dir(out, resume=resume, overwrite=overwrite, markers=("results.csv",), owned=OUTPUT_ENTRIES,
                         what="ablation directory", stale=STALE_ENTRIES)
    data = prepare_data(cfg, settings, loaded)
    config_dict = {**to_dict(cfg), "ablation": to_dict(settings)}
    fingerprint = runstate.fingerprint(data.loaded)
    changes = runstate.check_resume(out, config_dict, fingerprint, policy=runstate.ABLATE_POLICY) if resume else []
    for line in runstate.record_start(out, config_dict, fingerprint, resume=resume, changes=changes):
        log(line)
    log(f"data: {data.summary()}")
    main = is_main_process()
    ctx = Context(cfg, settings, data, out, log=log, resume=resume)
    csv_path = out / "results.csv"
    rows = report.read_csv(csv_path) if resume and csv_path.exists() else []
    done = {(r["strategy"], float(r["hf_fraction"]), int(r["seed"])) for r in rows}
    seeds = [cfg.train.seed + k for k in range(settings.seeds)]
    plan = [(name, f, s) for s in seeds for f in settings.hf_fractions for name in settings.strategies]
    needs_lf = {"transfer", "delta", "append"}
    for k, (name, fraction, seed) in enumerate(plan, start=1):
        tag = f"{name} hf_fraction={fraction:g} ({data.n_hf(fraction)} HF structures) seed {seed}"
        if (name, float(fraction), seed) in done:
            log(f"[run {k}/{len(plan)}] {tag}: done before (results.csv), skipped")
            continue
        if name in needs_lf and not ctx.has_lf_model(seed):
            ctx.lf_model(seed)
            if ("lf_model", 0.0, seed) not in done:
                rows.append(_lf_row(ctx, seed))
                done.add(("lf_model", 0.0, seed))
        log(f"[run {k}/{len(plan)}] {tag}")
        outcome, row = run_strategy(ctx, name, fraction, seed)
        errors = run_errors(ctx, outcome)  # before the row: a row in results.csv has its error file
        rows.append(row)
        if main:
            save_errors(out / "errors" / f"{run_tag(name, fraction, seed)}.npz", errors)
            report.write_csv(csv_path, rows)
            if settings.export:
                outcome.model.export(out / "runs" / run_tag(name, fraction, seed) / "model", training={"row": row})
        sync_processes("mfjax-ablate-row")  # every process has left the stage before its checkpoints go
        if main:
            shutil.rmtree(out / "stages" / run_tag(name, fraction, seed), ignore_errors=True)
        f_mae = row.get("hf_test_forces_mae_ev_a")
        e_mae = row.get("hf_test_energy_mae_mev_atom")
        log(f"[run {k}/{len(plan)}] {tag}: HF test F MAE {_fmt(f_mae, 1000)} meV/Å, E MAE {_fmt(e_mae)} meV/atom "
            f"({row['train_seconds']} s{'; ' + row['notes'] if row['notes'] else ''})")
    order = [s for s in settings.strategies]
    regions = list(data.test_sets())
    summary = {"data": data.summary(), "settings": _plain(settings), "runs": len(plan),
               "regions": {r: len(frames) for r, frames in data.test_sets().items()},
               "compilations": ctx.cache.compilations, "compile_seconds": round(ctx.cache.compile_seconds, 1)}
    if main:
        report.write_csv(csv_path, rows)
        comparisons, bands = _statistics(out, rows, regions, settings, log)
        (out / "results.md").write_text(report.markdown(rows, order, regions, comparisons))
        report.plot(rows, order, out / "learning_curves.png", title=f"{data.low} -> {data.high}", regions=regions,
                    bands=bands)
        summary.update(seconds=round(time.perf_counter() - t_start, 1), paired=comparisons)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {csv_path}, {out / 'results.md'}, {out / 'learning_curves.png'} "
        f"({round(time.perf_counter() - t_start, 1)} s)")
    return rows


def _statistics(out: Path, rows: list[dict], regions: list[str], settings: AblationSettings,
                log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """(paired comparisons, learning-curve bands) from the runs' error files (``mfjax.strategies.paired``)."""
    errors = paired.load_run_errors(out / "errors", rows)
    runs = [r for r in rows if r["strategy"] != "lf_model"]
    if len(errors) < len(runs):
        log(f"statistics: {len(runs) - len(errors)} of {len(runs)} runs have no error file (rows from an older "
            "mfjax?): they are left out of the paired differences")
    boot = dict(samples=settings.bootstrap.samples, seed=settings.bootstrap.seed)
    n_hf = {float(r["hf_fraction"]): int(r["n_hf_train"]) for r in runs}
    comparisons = paired.comparisons(errors, regions, n_hf, order=settings.strategies, **boot)
    bands = {(region, metric): paired.curve_intervals(errors, region, metric, **boot)
             for region in regions for metric in paired.METRICS}
    return comparisons, bands


def _fmt(value, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def _plain(settings: AblationSettings) -> dict:
    return to_dict(settings)
