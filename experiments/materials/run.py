"""Si–C materials evaluation: train every strategy (``mfjax ablate``), then score each exported
model on materials properties against the r2SCAN reference frames. One command, from the data to
the tables (see README.md, "Evaluation"):

    python experiments/materials/run.py experiments/materials/config.yaml --output experiments/materials/results
    python experiments/materials/run.py CONFIG --output DIR --quick        # CI-sized: tiny budgets and MD

CONFIG is an ``mfjax ablate`` config plus an ``evaluation:`` section (``sic_eval.EvaluationSettings``).
DIR receives ``ablation/`` (the ablation's own output, with every model under ``ablation/runs/``),
``results.csv`` (one row per strategy, HF fraction and seed), ``per_structure.csv`` (formation
energies and hull distances of every hull cell per run), ``reference.json`` (the r2SCAN values),
``results.md`` (means with 95 % intervals over seeds) and ``formation.png``, ``elastic.png``,
``md.png``. ``--resume`` continues a killed ablation (the evaluation is recomputed); ``--set
KEY=VALUE`` overrides the config (``evaluation.*`` keys too). Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import sic_eval as ev  # noqa: E402
import sic_report  # noqa: E402
from mfjax.errors import ConfigError, MfjaxError  # noqa: E402
from mfjax.model import load_model  # noqa: E402
from mfjax.strategies.ablate import ablate  # noqa: E402
from mfjax.strategies.errors import run_tag  # noqa: E402
from mfjax.strategies.report import read_csv  # noqa: E402
from mfjax.strategies.settings import load_ablation_config  # noqa: E402
from mfjax.utils import compilation_cache  # noqa: E402
from mfjax.utils.configtools import apply_overrides, from_dict, read_yaml, to_dict  # noqa: E402

__all__ = ["load", "run", "main"]


def load(config: str | Path, overrides: list[str] | None = None, *, quick: bool = False):
    """(mfjax config, ablation settings, evaluation settings) of a materials config."""
    raw = read_yaml(config)
    section = raw.pop("evaluation", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{config}: evaluation must be a mapping of keys")
    mine = [o[len("evaluation."):] for o in overrides or [] if o.startswith("evaluation.")]
    others = [o for o in overrides or [] if not o.startswith("evaluation.")]
    if quick:
        apply_overrides(section, list(section.get("quick", [])))
    apply_overrides(section, mine)
    cfg, settings = load_ablation_config(config, others, quick=quick, data=raw)
    evaluation = from_dict(ev.EvaluationSettings, section, "evaluation")
    if not settings.export:
        raise ConfigError("ablation.export must be true: the evaluation loads every exported model")
    if evaluation.md.enabled and evaluation.md.reference not in settings.strategies:
        raise ConfigError(f"evaluation.md.reference {evaluation.md.reference!r} is not among ablation.strategies "
                          f"{list(settings.strategies)}")
    if (evaluation.fidelity or settings.high) is None:
        raise ConfigError("name the high fidelity: ablation.high (or evaluation.fidelity)")
    return cfg, settings, evaluation


def _start_cell(reference: ev.ReferenceSet, md: ev.MDSettings):
    found = reference.select(structure_id=md.structure)
    if not found:
        raise ConfigError(f"evaluation.md.structure {md.structure!r}: no r2SCAN frame with that structure_id")
    atoms = found[0].atoms.copy()
    atoms.calc = None
    return atoms


def run(config: str | Path, output: str | Path, *, quick: bool = False, resume: bool = False, overwrite: bool = False,
        overrides: list[str] | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Train (``ablate``), evaluate every exported model, write the tables; returns the result rows."""
    start = time.perf_counter()
    cfg, settings, es = load(config, overrides, quick=quick)
    fidelity = es.fidelity or settings.high
    out = Path(output)
    reference = ev.ReferenceSet.load(cfg, fidelity)
    ref = ev.evaluate(None, reference, es)  # bad reference data fails here, before any training
    log(f"reference: {len(reference.frames)} {fidelity} frames ({reference.dropped} unconverged dropped); "
        + ", ".join(f"{k} {v:.4g}" for k, v in ref.scalars.items() if isinstance(v, float) and math.isfinite(v)))
    ablate(cfg, settings, out / "ablation", resume=resume, overwrite=overwrite, log=log)
    rows = [r for r in read_csv(out / "ablation" / "results.csv") if r["strategy"] != "lf_model"]
    start_cell = _start_cell(reference, es.md) if es.md.enabled else None
    results, errors, per_structure = [], [], []
    for r in rows:
        tag = run_tag(r["strategy"], float(r["hf_fraction"]), int(r["seed"]))
        model = load_model(out / "ablation" / "runs" / tag / "model")
        result = ev.evaluate(lambda frames, m=model: m.predict(list(frames), fidelity=fidelity), reference, es)
        row = {"strategy": r["strategy"], "hf_fraction": float(r["hf_fraction"]), "seed": int(r["seed"]),
               "n_hf_train": r.get("n_hf_train"), "steps": r.get("steps"), **result.scalars}
        if start_cell is not None:
            t0 = time.perf_counter()
            row.update(ev.md_properties(model, start_cell, es.md, fidelity))
            row["md_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"[evaluate] {tag}: " + ", ".join(f"{k} {row[k]:.4g}" for k in (
            "formation_mae_mev_atom", "e_hull_mae_mev_atom", "f1", "c11", "stability_time_ps", "diffusion_a2_ps")
            if isinstance(row.get(k), float)))
        results.append(row)
        errors.append(result.errors)
        per_structure += [{"strategy": r["strategy"], "hf_fraction": row["hf_fraction"], "seed": row["seed"], **p}
                          for p in result.table]
    _md_ratios(results, es.md)
    _write(out, results, per_structure, ref, reference, settings, es, errors, log)
    log(f"wrote {out / 'results.csv'}, {out / 'results.md'} ({time.perf_counter() - start:.0f} s)")
    return results


def _md_ratios(rows: list[dict], md: ev.MDSettings) -> None:
    """D / D_ref against the MD reference strategy of the same HF fraction and seed."""
    by_key = {(r["strategy"], r["hf_fraction"], r["seed"]): r for r in rows}
    for r in rows:
        other = by_key.get((md.reference, r["hf_fraction"], r["seed"]))
        if other is not None and "diffusion_a2_ps" in r:
            d, d_ref = r["diffusion_a2_ps"], other["diffusion_a2_ps"]
            r["diffusion_ratio"] = d / d_ref if math.isfinite(d) and math.isfinite(d_ref) and d_ref > 0 else math.nan


def _csv(path: Path, rows: list[dict]) -> None:
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _write(out: Path, results, per_structure, ref, reference, settings, es, errors, log) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _csv(out / "results.csv", results)
    _csv(out / "per_structure.csv", [{"strategy": "r2scan_reference", "hf_fraction": "", "seed": "", **p}
                                     for p in ref.table] + per_structure)
    scalars = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in ref.scalars.items()}
    (out / "reference.json").write_text(json.dumps({"fidelity": reference.fidelity, "frames": len(reference.frames),
                                                    "values": scalars, "evaluation": to_dict(es)}, indent=2) + "\n")
    s = ref.scalars
    header = [
        f"r2SCAN reference: {len(reference.frames)} frames; {s.get('n_heldout', 0)} ordered cells at held-out "
        f"compositions (formation energies), {s.get('n_hull_test', 0)} reference-file cells scored against the "
        f"r2SCAN hull ({s.get('n_stable_ref', 0)} stable at E_hull <= {es.threshold * 1000:g} meV/atom). Hull and "
        "formation energies on the labelled (unrelaxed) geometries; elemental references evaluated by each model.",
        f"Elastic set: {es.elastic_parent} (strains <= {es.elastic_max_strain:g} in the stress fit), clamped ions, at "
        "the reference cell; a0 per 8-atom cubic cell.",
        "Means over seeds with bootstrap 95 % intervals (mfjax.strategies.stats; formation and hull errors resample "
        "seeds, then structures).",
    ]
    if es.md.enabled:
        m = es.md
        header.append(f"MD: {m.structure} x {tuple(m.supercell)}, NVT {m.engine}, dt {m.timestep:g} fs; stability "
                      f"{m.stability_temperature:g} K for {m.stability_steps} steps, transport {m.transport_temperature:g} K "
                      f"for {m.transport_steps} steps (failure: atoms closer than {m.min_distance:g} Å or T > 5 x target); "
                      f"reference potential: `{m.reference}`.")
    boot = {"samples": settings.bootstrap.samples, "seed": settings.bootstrap.seed}
    text = sic_report.markdown(results, errors, settings.strategies, s, header, es.md.reference if es.md.enabled else None,
                           boot)
    (out / "results.md").write_text(text)
    try:
        sic_report.plot_all(out, results, per_structure, settings.strategies, s, es.threshold)
    except (ValueError, KeyError) as exc:  # an empty table (no held-out cells yet) has nothing to plot
        log(f"plots skipped: {exc}")
    np.savez(out / "errors.npz", **{f"{r['strategy']}_f{r['hf_fraction']:g}_s{r['seed']}_{k}": v
                                    for r, e in zip(results, errors) for k, v in e.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="materials config (an mfjax ablate config plus an evaluation: section)")
    parser.add_argument("--output", required=True, metavar="DIR", help="results directory")
    parser.add_argument("--quick", action="store_true", help="CI-sized: ablation.quick and evaluation.quick overrides")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue a killed ablation (keeps finished runs)")
    start.add_argument("--overwrite", action="store_true", help="replace earlier results in DIR")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (evaluation.* too), repeatable")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    compilation_cache.enable()
    try:
        run(args.config, args.output, quick=args.quick, resume=args.resume, overwrite=args.overwrite,
            overrides=args.overrides)
    except MfjaxError as exc:
        if args.debug:
            raise
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
