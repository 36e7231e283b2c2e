"""``mfjax label``: label structures with pyscf at one or more levels of theory.

    mfjax label IN_FILE --level pbe/def2-svp [--level r2scan/def2-svp ...] --out OUT.extxyz
                [--workers N] [--fidelity NAME ...] [--index :] [--max-cycle N] [--conv-tol X]
                [--kmesh 2 2 2] [--ke-cutoff 40] [--pseudo gth-pbe] [--no-density-fit]
                [--no-frozen-core] [--no-progress]

Rerunning the same command resumes: frames already in OUT (same structure_id and fidelity) are
skipped; an incomplete last frame (a killed run) is dropped with a warning and computed again. The
levels' basis and pseudopotential names are checked on the first frame before any calculation. The
exit status is 0 when every frame converged, 1 when some frame was kept unconverged or failed (they
are in OUT, marked ``scf_converged=False``; the first error is printed), 2 on usage errors (one line).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from mfjax.errors import MfjaxError
from mfjax.label.levels import Settings, parse_level
from mfjax.label.runner import label_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``label`` subcommand's arguments to ``parser``."""
    parser.add_argument("input", metavar="IN_FILE", help="structures, any ASE-readable file")
    parser.add_argument("--level", action="append", required=True, metavar="METHOD/BASIS",
                        help="level of theory, e.g. pbe/def2-svp, r2scan/def2-tzvp, ccsd(t)/cc-pvdz, "
                             "pbe/gth-szv (periodic); repeat for several levels")
    parser.add_argument("--out", required=True, metavar="OUT.extxyz", help="output (appended to)")
    parser.add_argument("--fidelity", action="append", default=None, metavar="NAME",
                        help="fidelity name per --level (default: pbe, r2scan, ccsdt)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads-per-worker", type=int, default=None,
                        help=f"OpenMP threads per worker (default cores // workers; cores={os.cpu_count()})")
    parser.add_argument("--index", default=":", help="ASE frame selection of IN_FILE (default ':')")
    defaults = Settings()
    parser.add_argument("--max-cycle", type=int, default=defaults.max_cycle, help="max SCF iterations")
    parser.add_argument("--conv-tol", type=float, default=defaults.conv_tol,
                        help="SCF energy threshold, Hartree")
    parser.add_argument("--kmesh", type=int, nargs=3, default=None, metavar=("K1", "K2", "K3"),
                        help="k-point mesh for periodic cells (default info['kmesh'] or 2 2 2)")
    parser.add_argument("--ke-cutoff", type=float, default=defaults.ke_cutoff,
                        help="periodic density grid cutoff, Hartree")
    parser.add_argument("--pseudo", default=defaults.pseudo, help="GTH pseudopotential for cells")
    parser.add_argument("--no-density-fit", action="store_true", help="exact integrals for DFT")
    parser.add_argument("--no-frozen-core", action="store_true", help="correlate core in CCSD(T)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    print(f"mfjax label: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``mfjax label`` with parsed ``args``; returns the exit status.

    Bad input (a level, the input file, a foreign output file) raises an ``MfjaxError`` subclass,
    printed as one line with exit status 2 by ``mfjax.cli``.
    """
    levels = [parse_level(text) for text in args.level]
    if args.fidelity is not None and len(args.fidelity) != len(levels):
        print("mfjax label: give one --fidelity per --level", file=sys.stderr)
        return 2
    settings = Settings(conv_tol=args.conv_tol, max_cycle=args.max_cycle,
                        density_fit=not args.no_density_fit, frozen_core=not args.no_frozen_core,
                        ke_cutoff=args.ke_cutoff, pseudo=args.pseudo,
                        kmesh=tuple(args.kmesh) if args.kmesh else None)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one line each, no source location
        summary = label_file(args.input, levels, args.out, index=args.index, fidelities=args.fidelity,
                             workers=args.workers, threads_per_worker=args.threads_per_worker,
                             settings=settings, progress=not args.no_progress)
    print(f"{summary.n_done} labelled, {summary.n_skipped} already done, "
          f"{summary.n_unconverged} unconverged, {summary.n_failed} failed "
          f"({summary.total_wall_time_s:.1f} s of calculation) -> {args.out}")
    if summary.first_error:
        print(f"first error: {summary.first_error}")
    return 1 if summary.n_unconverged or summary.n_failed else 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m mfjax.label.cli``)."""
    parser = argparse.ArgumentParser(prog="mfjax label", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except MfjaxError as exc:
        print(f"mfjax label: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
