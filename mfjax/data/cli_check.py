"""``mfjax check-data CONFIG [--set k=v ...]``: validate every dataset and print its statistics.

Prints the frame accounting (per dataset: read, used, excluded with reasons, split counts), per-
fidelity counts and label coverage, E0 per fidelity and element (fitted on the training split),
the force-RMS scale, the mean neighbour count and the batch budget. Exit 0 when every frame was
usable, 2 on a ``DataError`` (or, with ``--keep-going``, when any frame was excluded as invalid).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

import numpy as np
from ase.data import chemical_symbols

from mfjax.config import Config, load_config
from mfjax.data.batching import budget_outliers, run_budget
from mfjax.data.dataset import load_data
from mfjax.data.statistics import avg_num_neighbors, fit_e0, force_rms, neighbor_counts

__all__ = ["add_arguments", "run", "summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set data.cutoff=4.5 (repeatable)")
    parser.add_argument("--keep-going", action="store_true",
                        help="exclude invalid frames and report them all instead of stopping at the first")
    parser.add_argument("--json", metavar="PATH", help="also write the accounting as JSON to PATH")


def summary(loaded, cfg: Config) -> str:
    """The statistics section (E0 with ``train.e0_alpha``, scale, neighbours, the run's batch budget)."""
    cutoff, batch = cfg.data.cutoff, cfg.train.batch
    train = loaded.train or loaded.valid or loaded.test
    everything = loaded.train + loaded.valid + loaded.test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e0 = fit_e0(train, loaded.species, loaded.fidelities, alpha=cfg.train.e0_alpha)
        scale = force_rms(train)
    counts = neighbor_counts(everything, cutoff)
    budget = run_budget(everything, cutoff, batch.max_graphs, batch.max_nodes, batch.max_edges)
    names = [chemical_symbols[z] for z in loaded.species]
    width = max(8, *(len(f) for f in loaded.fidelities))
    lines = [f"E0 (eV/atom, ridge alpha {cfg.train.e0_alpha:g} on the training split of {len(train)} frames)",
             "fidelity".ljust(width) + "".join(n.rjust(12) for n in names)]
    for f, name in enumerate(loaded.fidelities):
        lines.append(name.ljust(width) + "".join(f"{v:12.4f}" for v in e0[f]))
    lines += [f"  note: {w.message}" for w in caught]
    lines += [
        "",
        f"force RMS scale (pooled): {scale:.4f} eV/Å",
        f"mean neighbours within {cutoff} Å: {avg_num_neighbors(train, cutoff):.3f}",
        f"batch budget for max_graphs={batch.max_graphs}: n_node={budget.n_node}, n_edge={budget.n_edge}, "
        f"n_graph={budget.n_graph}  (largest structure: {max(s.num_atoms for s in everything)} atoms, "
        f"{int(np.max(counts))} edges; the same budget as mfjax train)",
    ]
    lines += [f"  warning: {w}" for w in budget_outliers(everything, cutoff)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    logging.captureWarnings(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_data(cfg.data, on_error="exclude" if args.keep_going else "raise")
    report = loaded.report
    print(f"mfjax check-data: {args.config}")
    print(f"species: {list(loaded.species)}   fidelities: {list(loaded.fidelities)}")
    print()
    print(report.format())
    print()
    print(summary(loaded, cfg))
    texts = [str(w.message) for w in caught]
    if texts:
        print("\nwarnings:")
        for t in texts:
            print(f"  - {t}")
    invalid = sum(n for r, n in report.excluded.items() if r.startswith("invalid"))
    excluded = [
        why if why.startswith(d.source) else f"{d.source}, frame {f}: {why}"
        for d in report.datasets for f, why in d.excluded_frames
    ]
    if excluded:
        print("\nexcluded frames:")
        for why in excluded:
            print(f"  - {why}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report.to_dict(), handle, indent=1)
    print(f"\n{report.used} of {report.frames_read} frames usable")
    return 2 if invalid else 0
