"""Make the shipped multi-fidelity dataset (mfjax/datasets/data/). See README.md next to this file.

    python experiments/datasets/make_dataset.py [--workers 2] [--only sample|organics|si]

Resumable: geometries are sampled once into experiments/datasets/structures/ (deterministic seeds);
labelling appends to the output files and skips frames already there, so rerunning the same command
continues an interrupted run. Stages run in an order that gives a usable, fully paired subset early:
PBE and r2SCAN on the r2SCAN geometries in alternating
rounds of 40, CCSD(T), the Si cells, then the rest of the PBE frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite/pyscf load: no oversubscription

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from mfjax.label.levels import Settings, parse_level  # noqa: E402
from mfjax.label.runner import label_frames  # noqa: E402

HERE = Path(__file__).resolve().parent
STRUCTURES = HERE / "structures"
DATA = HERE.parents[1] / "mfjax" / "datasets" / "data"
LOG = HERE / "generation_log.json"

#: name -> ASE g2 key. Together: C, H, N, O; 5-7 atoms each.
MOLECULES = {"methanol": "CH3OH", "methylamine": "H3CNH2", "formic_acid": "HCOOH"}
COVERED_T = (300.0, 600.0)
UNCOVERED_T = (1000.0, 1500.0)
FRAMES_PER_T = 90  # PBE: 3 molecules x 4 temperatures x 90 = 1080
R2SCAN_COVERED_PER_T = 30  # 3 x 2 x 30 = 180 training frames (low T only)
R2SCAN_UNCOVERED_PER_T = 9  # 3 x 2 x 9 = 54 test frames in the region r2SCAN training lacks
CCSDT_COVERED_PER_T = 6  # 3 x 2 x 6 = 36
CCSDT_UNCOVERED_PER_T = 3  # 3 x 2 x 3 = 18
SI_LATTICE = 5.75  # near the PBE/gth-szv minimum (about 5.78 A; the minimal basis inflates it)
SI_PBE, SI_R2SCAN = 30, 15
CHUNK = 40  # paired PBE/r2SCAN frames labelled per round
SI_SETTINGS = Settings(kmesh=(2, 2, 2), ke_cutoff=40.0, pseudo="gth-pbe")

# The extension (issue 17): five more molecules, a compositional gap and a larger fixed HF test set.
#: r2SCAN training data at 300/600 K, like the first three molecules.
EXTRA_HF = {"formaldehyde": "H2CO", "ethylene": "C2H4"}
#: PBE only in training: r2SCAN labels exist only in the test file (region "gap").
EXTRA_GAP = {"water": "H2O", "ammonia": "NH3", "acetaldehyde": "CH3CHO"}
EXTRA_PBE_PER_T = 30  # 5 molecules x 4 temperatures x 30 = 600 PBE frames
EXTRA_R2SCAN_PER_T = 25  # 2 x 2 x 25 = 100 paired r2SCAN training frames (covered region)
TEST_COVERED_PER_T = 10  # 5 HF molecules x 2 x 10 = 100 unseen geometries, r2SCAN only
TEST_GAP_PER_T = 12  # 3 gap molecules x 2 x 12 = 72, r2SCAN only


def sample_organics(path: Path) -> None:
    """GFN2-xTB Langevin MD snapshots, interleaved over (molecule, temperature)."""
    from mfjax.label.sampling import md_snapshots

    runs: dict[tuple[str, float], list[Atoms]] = {}
    for m, (name, key) in enumerate(MOLECULES.items()):
        for t, temp in enumerate(COVERED_T + UNCOVERED_T):
            start = time.perf_counter()
            ref = molecule(key)
            ref.info = {"molecule": name}
            frames = md_snapshots(ref, temp, FRAMES_PER_T, seed=1000 * m + t)
            for k, atoms in enumerate(frames):
                atoms.info["structure_id"] = f"{name}-T{int(temp)}-{k:03d}"
                atoms.info["region"] = "covered" if temp in COVERED_T else "uncovered"
                atoms.info["sample_index"] = k
            runs[(name, temp)] = frames
            print(f"sampled {name} {temp:.0f} K in {time.perf_counter() - start:.1f} s", flush=True)
    ordered = [runs[key][k] for k in range(FRAMES_PER_T) for key in runs]
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, ordered, format="extxyz")


def _snapshots(name: str, key: str, temp: float, n: int, seed: int, tag: str, region: str) -> list[Atoms]:
    from mfjax.label.sampling import md_snapshots

    ref = molecule(key)
    ref.info = {"molecule": name}
    frames = md_snapshots(ref, temp, n, seed=seed)
    for k, atoms in enumerate(frames):
        atoms.info.update({"structure_id": f"{name}-{tag}T{int(temp)}-{k:03d}", "region": region,
                           "sample_index": k})
    return frames


def sample_extra(path: Path) -> None:
    """Training snapshots of the five new molecules, then the fixed r2SCAN test geometries.

    Test geometries come from separate MD runs (their own seeds, ``structure_id`` tag ``test-``), so no
    test geometry is labelled at any fidelity in training: ``split`` = "test" on each of them.
    """
    extra = {**EXTRA_HF, **EXTRA_GAP}
    runs: dict[tuple[str, float], list[Atoms]] = {}
    for m, (name, key) in enumerate(extra.items()):
        for t, temp in enumerate(COVERED_T + UNCOVERED_T):
            region = "covered" if temp in COVERED_T else "uncovered"
            runs[(name, temp)] = _snapshots(name, key, temp, EXTRA_PBE_PER_T, 5000 + 100 * m + t, "", region)
            print(f"sampled {name} {temp:.0f} K", flush=True)
    train = [runs[key][k] for k in range(EXTRA_PBE_PER_T) for key in runs]
    test: list[Atoms] = []
    for m, (name, key) in enumerate({**MOLECULES, **extra}.items()):
        gap = name in EXTRA_GAP
        for t, temp in enumerate(COVERED_T):
            n = TEST_GAP_PER_T if gap else TEST_COVERED_PER_T
            test += _snapshots(name, key, temp, n, 9000 + 100 * m + t, "test-", "gap" if gap else "covered")
    for atoms in test:
        atoms.info["split"] = "test"
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, train + test, format="extxyz")


def sample_si(path: Path) -> None:
    """Rattled, strained 2-atom diamond cells."""
    from mfjax.label.sampling import strained_cells

    prim = bulk("Si", "diamond", a=SI_LATTICE)
    frames = strained_cells(prim, SI_PBE, max_strain=0.04, rattle_std=0.05, seed=7)
    for k, atoms in enumerate(frames):
        atoms.info.update({"structure_id": f"si-{k:03d}", "system": "si_diamond", "sample_index": k})
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")


def load(path: Path, sampler) -> list[Atoms]:  # type: ignore[no-untyped-def]
    if not path.exists():
        sampler(path)
    return ase.io.read(path, ":")


def _pick(frames: list[Atoms], covered: int, uncovered: int) -> list[Atoms]:
    return [a for a in frames
            if a.info["sample_index"] < (covered if a.info["region"] == "covered" else uncovered)]


def _record(stage: str, summary, seconds: float) -> None:  # type: ignore[no-untyped-def]
    log = json.loads(LOG.read_text()) if LOG.exists() else {}
    entry = log.get(stage, {"wall_s": 0.0, "frames": 0, "cpu_frame_s": 0.0})
    entry["wall_s"] = round(entry["wall_s"] + seconds, 1)
    entry["frames"] += summary.n_done
    entry["cpu_frame_s"] = round(entry["cpu_frame_s"] + summary.total_wall_time_s, 1)
    entry["unconverged"] = entry.get("unconverged", 0) + summary.n_unconverged + summary.n_failed
    log[stage] = entry
    LOG.write_text(json.dumps(log, indent=1) + "\n")


def stage(name: str, frames: list[Atoms], level: str, out: str, workers: int,
          settings: Settings | None = None) -> None:
    start = time.perf_counter()
    print(f"== {name}: {len(frames)} frames at {level} -> {out}", flush=True)
    summary = label_frames(frames, [parse_level(level)], DATA / out, workers=workers,
                           threads_per_worker=1, settings=settings)
    seconds = time.perf_counter() - start
    print(f"   {summary} in {seconds:.0f} s", flush=True)
    if summary.n_done:
        _record(name, summary, seconds)


def make_extra(frames: list[Atoms], workers: int) -> None:
    """HF training pairs first, then the r2SCAN test file, then the remaining PBE frames."""
    train = [a for a in frames if a.info.get("split") != "test"]
    test = [a for a in frames if a.info.get("split") == "test"]
    paired = [a for a in train if a.info["molecule"] in EXTRA_HF and a.info["region"] == "covered"
              and a.info["sample_index"] < EXTRA_R2SCAN_PER_T]
    stage("organics_extra_pbe_paired", paired, "pbe/def2-svp", "organics_extra_pbe.extxyz", workers)
    stage("organics_extra_r2scan", paired, "r2scan/def2-svp", "organics_extra_r2scan.extxyz", workers)
    stage("organics_r2scan_test", test, "r2scan/def2-svp", "organics_r2scan_test.extxyz", workers)
    gap_first = sorted(train, key=lambda a: a.info["molecule"] not in EXTRA_GAP)
    stage("organics_extra_pbe", gap_first, "pbe/def2-svp", "organics_extra_pbe.extxyz", workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=["sample", "organics", "si", "extra"], default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    org = load(STRUCTURES / "organics_structures.extxyz", sample_organics)
    si = load(STRUCTURES / "si_structures.extxyz", sample_si)
    extra = load(STRUCTURES / "organics_extra_structures.extxyz", sample_extra)
    if args.only == "sample":
        return 0
    w = args.workers
    if args.only == "extra":
        make_extra(extra, w)
        print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
        return 0
    r2 = _pick(org, R2SCAN_COVERED_PER_T, R2SCAN_UNCOVERED_PER_T)
    if args.only in (None, "organics"):
        for start in range(0, len(r2), CHUNK):  # alternate so both files grow, fully paired
            chunk = r2[start:start + CHUNK]
            stage("organics_pbe_paired", chunk, "pbe/def2-svp", "organics_pbe.extxyz", w)
            stage("organics_r2scan", chunk, "r2scan/def2-svp", "organics_r2scan.extxyz", w)
        cc = _pick(org, CCSDT_COVERED_PER_T, CCSDT_UNCOVERED_PER_T)
        stage("organics_ccsdt", cc, "ccsd(t)/cc-pvdz", "organics_ccsdt.extxyz", w)
    if args.only in (None, "si"):
        stage("si_pbe", si, "pbe/gth-szv", "si_pbe.extxyz", w, SI_SETTINGS)
        stage("si_r2scan", si[:SI_R2SCAN], "r2scan/gth-szv", "si_r2scan.extxyz", w, SI_SETTINGS)
    if args.only in (None, "organics"):
        stage("organics_pbe", org, "pbe/def2-svp", "organics_pbe.extxyz", w)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
