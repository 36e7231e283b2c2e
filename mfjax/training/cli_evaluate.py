"""``mfjax evaluate MODEL DATA [--fidelity NAME] [--json OUT]``: per-fidelity metrics."""

from __future__ import annotations

import argparse

from mfjax.data.io import read_structures
from mfjax.model import load_model
from mfjax.training.evaluation import evaluate
from mfjax.training.final import write_json_atomic
from mfjax.training.metrics import format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported model directory (RUN_DIR/model)")
    parser.add_argument("data", help="labelled structures (extxyz or anything ase.io reads)")
    parser.add_argument("--fidelity", default=None,
                        help="fidelity of every frame (default: atoms.info['fidelity'] per frame)")
    parser.add_argument("--index", default=":", help="ase.io.read index (default ':')")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the metrics as JSON")
    parser.add_argument("--precision", default="float32", choices=("float32", "float64"))


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, precision=args.precision)
    if args.fidelity is not None:
        model.fidelity_index(args.fidelity)
    fidelity = args.fidelity
    if fidelity is None and len(model.fidelities) == 1:
        fidelity = model.fidelities[0]
    structures = read_structures(args.data, fidelity=fidelity, index=args.index, species=model.species,
                                 fidelities=model.fidelities, require_labels=True)
    metrics = evaluate(model, structures)
    print(format_table(metrics, title=f"{args.data}: {sum(m['n_structures'] for m in metrics.values())} structures"))
    if args.json:
        write_json_atomic(args.json, metrics)
    return 0
