"""``mfjax hull``: energies above the convex hull of a set of structures at one fidelity.

Energies come from a model (``--energies-from model --model PATH --fidelity F``, optionally after
``--relax``) or from the file's labels (``--energies-from labels``; ``--fidelity`` then keeps the
frames of that fidelity). Prints per structure the formula, energy per atom, formation energy per
atom, E_above_hull (eV/atom) and whether it is stable (E_hull <= ``--threshold``). With
``--reference FILE`` (the same structures with reference labels, e.g. r2SCAN) the reference hull
is built too and the model's stable/unstable classification is scored (precision, recall, F1,
accuracy) with the MAE of E_above_hull and of the formation energies. ``--out`` writes CSV or JSON.
A thin shell over :mod:`mfjax.materials.hull`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mfjax.errors import ConfigError
from mfjax.materials.cli_relax import load_cli_model
from mfjax.materials.config import load_relax_config
from mfjax.materials.hull import HullRow, compare, entries_from_atoms, hull_table, write_table
from mfjax.materials.io import Frame, label_energies, read_frames
from mfjax.materials.relax import CalculatorPool, relax, single_points, write_structures

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structures", help="structures (any ASE-readable file; every frame)")
    parser.add_argument("--energies-from", required=True, choices=["model", "labels"],
                        help="energies predicted by --model or taken from the file's energy labels")
    parser.add_argument("--model", default=None, help="exported model directory ('toy-lj': the LJ stand-in)")
    parser.add_argument("--fidelity", default=None,
                        help="model fidelity; with labels, keep the frames whose info['fidelity'] is this")
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"], help="model precision")
    parser.add_argument("--relax", action="store_true", help="relax the structures with the model first")
    parser.add_argument("--relax-set", dest="relax_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a relaxation config key for --relax (repeatable; default cell=variable)")
    parser.add_argument("--relaxed-out", default=None, metavar="FILE", help="write the relaxed structures (extxyz)")
    parser.add_argument("--reference", default=None, metavar="FILE",
                        help="the same structures with reference energy labels: classification metrics")
    parser.add_argument("--reference-fidelity", default=None,
                        help="keep the reference frames whose info['fidelity'] is this")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="stable when E_above_hull <= this, eV/atom (default 0.0)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the table (.csv or .json)")


def _check_args(args: argparse.Namespace) -> None:
    if args.energies_from == "model" and args.model is None:
        raise ConfigError("--energies-from model needs --model PATH")
    if args.energies_from == "labels" and (args.model is not None or args.relax):
        raise ConfigError("--model and --relax need --energies-from model (labels are read as they are)")
    if (args.relax_overrides or args.relaxed_out) and not args.relax:
        raise ConfigError("--relax-set and --relaxed-out need --relax")
    if args.out is not None and Path(args.out).suffix not in (".csv", ".json"):
        raise ConfigError(f"--out {args.out!r}: must end in .csv or .json")
    if not math.isfinite(args.threshold):
        raise ConfigError(f"--threshold must be a finite number of eV/atom, got {args.threshold}")


def model_energies(args: argparse.Namespace, frames: list[Frame]) -> list[float]:
    """Energies (eV) of the frames predicted by ``--model`` at ``--fidelity`` (relaxed with ``--relax``)."""
    model = load_cli_model(args.model, args.precision)
    atoms, names = [f.atoms for f in frames], [f.name for f in frames]
    if args.relax:
        cfg = load_relax_config(None, args.relax_overrides,
                                values={"cell": "variable", "fidelity": args.fidelity, "precision": args.precision})
        pool = CalculatorPool.for_relax(model, cfg)
        results = relax(model, atoms, cfg, names=names, pool=pool)
        done = [r.atoms for r in results]
        print(f"relaxed: {sum(r.converged for r in results)} of {len(results)} converged")
        if args.relaxed_out:
            write_structures(args.relaxed_out, done)
    else:
        pool = CalculatorPool(model, args.fidelity)
        done = single_points(model, atoms, args.fidelity, names=names, pool=pool)
    print(f"{len(frames)} structures, {pool.compile_count} compilations")
    return [a.get_potential_energy() for a in done]


def _table(rows: list[HullRow], reference: list[HullRow] | None) -> str:
    head = f"{'structure':<32} {'formula':<10} {'E/atom':>11} {'E_form/atom':>11} {'E_hull':>9} {'stable':>6}"
    if reference is not None:
        head += f" {'ref_E_hull':>10} {'ref_stable':>10}"
    lines = [head, "-" * len(head)]
    for k, row in enumerate(rows):
        line = (f"{row.name:<32} {row.formula:<10} {row.energy_per_atom:>11.5f} {row.formation_energy_per_atom:>11.5f}"
                f" {row.e_above_hull:>9.5f} {'yes' if row.stable else 'no':>6}")
        if reference is not None:
            line += f" {reference[k].e_above_hull:>10.5f} {'yes' if reference[k].stable else 'no':>10}"
        lines.append(line)
    return "\n".join(lines)


def _metrics_text(metrics: dict) -> str:
    def fmt(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{x:.3f}"

    return (f"classification at E_hull <= {metrics['threshold']} eV/atom (stable = positive, n = {metrics['n']}): "
            f"TP {metrics['tp']} FP {metrics['fp']} TN {metrics['tn']} FN {metrics['fn']}; "
            f"precision {fmt(metrics['precision'])} recall {fmt(metrics['recall'])} F1 {fmt(metrics['f1'])} "
            f"accuracy {fmt(metrics['accuracy'])}\n"
            f"MAE E_above_hull {metrics['mae_e_above_hull']:.5f} eV/atom; MAE formation energy "
            f"{metrics['mae_formation_energy']:.5f} eV/atom; R² formation energy {fmt(metrics['r2_formation_energy'])}")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    frames = read_frames(args.structures, args.fidelity if args.energies_from == "labels" else None)
    reference_frames = None
    if args.reference is not None:  # read (and check) before any model work
        reference_frames = read_frames(args.reference, args.reference_fidelity)
        reference_energies = label_energies(reference_frames)
    if args.energies_from == "labels":
        energies = label_energies(frames)
    else:
        energies = model_energies(args, frames)
    rows = hull_table(entries_from_atoms([f.atoms for f in frames], energies, [f.name for f in frames]),
                      args.threshold)
    reference = metrics = None
    if reference_frames is not None:
        reference = hull_table(entries_from_atoms([f.atoms for f in reference_frames], reference_energies,
                                                  [f.name for f in reference_frames]), args.threshold)
        metrics = compare(rows, reference, args.threshold)
    print(_table(rows, reference))
    print(f"{sum(r.stable for r in rows)} of {len(rows)} stable (E_hull <= {args.threshold} eV/atom)")
    if metrics is not None:
        print(_metrics_text(metrics))
    if args.out is not None:
        for path in write_table(args.out, rows, reference, metrics):
            print(f"wrote {path}")
    return 0
