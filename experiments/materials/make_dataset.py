"""Make the periodic Si-C multi-fidelity dataset (mfjax/datasets/data/sic_*.extxyz). See README.md.

    OMP_NUM_THREADS=1 python experiments/materials/make_dataset.py            # everything, resumable
    python experiments/materials/make_dataset.py --only sample                # structures only
    python experiments/materials/make_dataset.py --stages ordered,strained    # some stages
    python experiments/materials/make_dataset.py --stages strained --parents key   # Si, C, 3C-SiC only

Resumable: structures are generated once into experiments/materials/structures/ (deterministic:
fixed seeds, fixed enumeration order; committed), and labelling appends frame by frame to the
output files, skipping (structure_id, fidelity) pairs already there, so rerunning the same command
continues an interrupted run. Stages run in an order that gives a usable, paired subset early:
ordered cells (PBE, then r2SCAN train, then r2SCAN reference), then strained, rattled, hot, and
the 16-atom cells last. Progress goes to generation_log.json (per stage: frames, wall time, summed per-frame times).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before pyscf loads: one thread, no oversubscription

import ase.io
import numpy as np
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfjax.label.levels import Settings, parse_level
from mfjax.label.runner import label_frames

import structures as st

HERE = Path(__file__).resolve().parent
ORDERED = HERE / "structures" / "sic_ordered.extxyz"
DERIVED = HERE / "structures" / "sic_derived.extxyz"
DATA = HERE.parents[1] / "mfjax" / "datasets" / "data"
LOG = HERE / "generation_log.json"
PBE_OUT, R2SCAN_OUT, REF_OUT = "sic_pbe.extxyz", "sic_r2scan.extxyz", "sic_r2scan_ref.extxyz"

#: Levels and numerical settings (README.md, "Pilot", says why). ke_cutoff is in Hartree.
BASIS = "gth-dzv"
#: Fermi-Dirac smearing 0.002 Ha (54 meV): the C-in-Si decorations have no gap at their k-mesh in
#: this basis (Si7C1: HOMO = LUMO to 1e-4 Ha at every cycle; the integer-occupation SCF never converged).
SETTINGS = Settings(ke_cutoff=60.0, pseudo="gth-pbe", conv_tol=1e-8, max_cycle=100, smearing=0.002)
#: Carbon counts (of 8) of the 8-atom cells whose compositions get r2SCAN training labels; the
#: others (1, 3, 5, 7 and every 16-atom composition) have no r2SCAN training data at all.
HF_COVERED_N = (0, 2, 4, 6, 8)
#: k-point meshes (Gamma-centred Monkhorst-Pack): k-spacing 0.09-0.14 1/Å (1/(n a)) everywhere.
KMESH = {"cubic8": "2 2 2", "cubic16": "1 2 2", "2H": "3 3 2", "4H": "3 3 1"}
UNITS = "energy:eV forces:eV/Ang stress:eV/Ang^3(ASE sign, Voigt xx yy zz yz xz xy) ke_cutoff:Hartree"
#: The three cells every evaluation needs (elemental references and the stable compound): they
#: get the full strain set and are labelled first in every stage.
KEY_PARENTS = ("c8-n0-d0", "c8-n8-d0", "c8-n4-d3")  # diamond Si, diamond C, 3C-SiC (zincblende)
#: Isotropic linear strains (equation of state): all of them for KEY_PARENTS, +-2 % for the
#: other 8-atom cells and 2H/4H. Uniaxial (Voigt 1) and shear (Voigt 4, engineering strain) strains
#: for cubic elastic constants C11, C12, C44 (clamped ions): KEY_PARENTS only.
EOS_STRAINS = (-0.03, -0.02, -0.01, 0.01, 0.02, 0.03)
EOS_STRAINS_OTHER = (-0.02, 0.02)
ELASTIC_STRAINS = ((0, -0.01), (0, 0.01), (3, -0.02), (3, 0.02))
#: Rattles: (Gaussian std Å, max random strain component) per frame; 16-atom cells get the first.
RATTLES = ((0.05, 0.01), (0.1, 0.02))
#: Hot snapshots: one Tersoff Langevin-MD snapshot per temperature (K) per 8-atom/2H/4H cell.
HOT_T = (1200.0, 2400.0)


def _info(atoms: Atoms, **info) -> Atoms:  # type: ignore[no-untyped-def]
    atoms.info.update(info)
    atoms.info["composition"] = st.formula(atoms)
    atoms.info["x_C"] = round(atoms.get_chemical_symbols().count("C") / len(atoms), 6)
    atoms.info["units"] = UNITS
    return atoms


def parents() -> list[Atoms]:
    """The ordered cells: every symmetry-distinct C decoration of the 8-atom cubic diamond cell
    (16 of them), six 16-atom (2x1x1) cells at other compositions, and 2H/4H SiC."""
    out = []
    host = st.cubic_host()
    for n in range(9):
        for k, sites in enumerate(st.distinct_decorations(host, n)):
            atoms = st.relax_tersoff(st.decorate(host, sites))
            region = "hf_covered" if n in HF_COVERED_N else "hf_heldout"
            out.append(_info(atoms, structure_id=f"c8-n{n}-d{k}", parent=f"c8-n{n}-d{k}", cell_type="cubic8",
                             prototype="zincblende" if (n == 4 and sites == (0, 2, 4, 6)) else "diamond-decoration",
                             region=region, kmesh=KMESH["cubic8"]))
    double = host.repeat((2, 1, 1))
    zb = [i for i in range(16) if i % 2 == 0]  # C on one fcc sublattice: 3C-SiC doubled
    rng = np.random.default_rng(16)
    choices = {
        "n1": (0,),  # one C in Si16 (dilute)
        "n7": tuple(zb[1:]),  # 3C-SiC with one C -> Si antisite
        "n9": tuple(zb) + (1,),  # 3C-SiC with one Si -> C antisite
        "n15": tuple(range(1, 16)),  # one Si in C16
        "n5": tuple(sorted(rng.choice(16, 5, replace=False).tolist())),
        "n11": tuple(sorted(rng.choice(16, 11, replace=False).tolist())),
    }
    for name, sites in choices.items():
        atoms = st.relax_tersoff(st.decorate(double, sites))
        out.append(_info(atoms, structure_id=f"c16-{name}", parent=f"c16-{name}", cell_type="cubic16",
                         prototype="diamond-decoration", region="hf_heldout", kmesh=KMESH["cubic16"]))
    for name in ("2H", "4H"):
        atoms = st.relax_tersoff(st.polytype(name))
        out.append(_info(atoms, structure_id=f"sic-{name}", parent=f"sic-{name}", cell_type=name,
                         prototype=f"{name}-SiC", region="hf_covered", kmesh=KMESH[name]))
    for atoms in out:
        atoms.info["kind"] = "ordered"
    return out


def derived(parent: Atoms, seed: int) -> list[Atoms]:
    """Strained, rattled and hot frames of one ordered cell (all tagged with its ``parent``)."""
    big = parent.info["cell_type"] == "cubic16"
    key = parent.info["parent"] in KEY_PARENTS
    keep = {k: parent.info[k] for k in ("parent", "cell_type", "prototype", "region", "kmesh")}
    pid = parent.info["parent"]
    out = []
    for e in () if big else EOS_STRAINS if key else EOS_STRAINS_OTHER:
        atoms = st.strained(parent, e * np.eye(3))
        out.append(_info(atoms, **keep, structure_id=f"{pid}-eos{e:+.2f}", kind="strained",
                         strain_type="isotropic", strain=e))
    for comp, e in ELASTIC_STRAINS if key else ():
        atoms = st.strained(parent, st.voigt_strain(comp, e))
        out.append(_info(atoms, **keep, structure_id=f"{pid}-v{comp + 1}{e:+.2f}", kind="strained",
                         strain_type=f"voigt{comp + 1}", strain=e))
    rng = np.random.default_rng(seed)
    for k, (std, max_strain) in enumerate(RATTLES[:1] if big else RATTLES):
        atoms = st.rattled(parent, std, max_strain, rng)
        out.append(_info(atoms, **keep, structure_id=f"{pid}-rat{k}", kind="rattled", rattle_std=std,
                         max_strain=max_strain))
    for t, temp in enumerate(() if big else HOT_T):
        (atoms,) = st.hot_snapshots(parent, temp, 1, seed=seed * 10 + t)
        d = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min()
        out.append(_info(atoms, **keep, structure_id=f"{pid}-hot{int(temp)}", kind="hot",
                         temperature_K=temp, md="Tersoff 1989, Langevin 1 fs, friction 0.02/fs, 250 fs",
                         min_distance=round(float(d), 3)))
    return out


def r2scan_split(atoms: Atoms) -> str:
    """``train`` (r2SCAN training label), ``test`` (r2SCAN reference label, never for training) or
    ``none``.

    train: the ordered 8-atom cells at covered compositions (n_C = 0, 2, 4, 6, 8 of 8), the first
    rattle of diamond Si, diamond C and 3C-SiC, and the +-2 % isotropic strains of Si and C.
    test: the ordered cells at held-out compositions (8- and 16-atom), 2H/4H-SiC, and the whole strain
    set of 3C-SiC (lattice constant, bulk modulus and C11, C12, C44 at r2SCAN).
    """
    info = atoms.info
    pid, kind = info["parent"], info["kind"]
    if pid == "c8-n4-d3" and kind == "strained" or kind == "ordered" and info["region"] == "hf_heldout":
        return "test"
    if info["cell_type"] in ("2H", "4H"):
        return "test" if kind == "ordered" else "none"
    if info["region"] != "hf_covered":
        return "none"
    if kind == "ordered" or pid in KEY_PARENTS and info["structure_id"].endswith("-rat0"):
        return "train"
    if pid in ("c8-n0-d0", "c8-n8-d0") and kind == "strained" and info.get("strain_type") == "isotropic" \
            and abs(info["strain"]) == 0.02:
        return "train"
    return "none"


def _write(path: Path, frames: list[Atoms]) -> None:
    for atoms in frames:
        atoms.info["r2scan_split"] = r2scan_split(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def load_ordered() -> list[Atoms]:
    """The ordered cells (generated once, a minute of Tersoff relaxations)."""
    if not ORDERED.exists():
        start = time.perf_counter()
        _write(ORDERED, parents())
        print(f"sampled ordered cells in {time.perf_counter() - start:.0f} s", flush=True)
    return ase.io.read(ORDERED, ":")


def load_derived(ordered: list[Atoms]) -> list[Atoms]:
    """Strained, rattled and hot frames of the ordered cells as read back from ORDERED (generated
    once; the Tersoff MD takes ~15 min on one core)."""
    if not DERIVED.exists():
        start = time.perf_counter()
        frames = []
        for i, parent in enumerate(ordered):
            frames.extend(derived(parent, seed=100 + i))
            print(f"sampled {parent.info['parent']} ({len(frames)} frames, {time.perf_counter() - start:.0f} s)",
                  flush=True)
        _write(DERIVED, frames)
    return ase.io.read(DERIVED, ":")


def _record(stage: str, summary, seconds: float) -> None:  # type: ignore[no-untyped-def]
    log = json.loads(LOG.read_text()) if LOG.exists() else {}
    entry = log.get(stage, {"wall_s": 0.0, "frames": 0, "cpu_frame_s": 0.0, "unconverged": 0})
    entry["wall_s"] = round(entry["wall_s"] + seconds, 1)
    entry["frames"] += summary.n_done
    entry["cpu_frame_s"] = round(entry["cpu_frame_s"] + summary.total_wall_time_s, 1)
    entry["unconverged"] += summary.n_unconverged + summary.n_failed
    log[stage] = entry
    LOG.write_text(json.dumps(log, indent=1) + "\n")


def label(name: str, frames: list[Atoms], method: str, out: str, workers: int = 1) -> None:
    if not frames:
        return
    start = time.perf_counter()
    print(f"== {name}: {len(frames)} frames at {method}/{BASIS} -> {out}", flush=True)
    summary = label_frames(frames, [parse_level(f"{method}/{BASIS}")], DATA / out, workers=workers,
                           threads_per_worker=1, settings=SETTINGS, progress=False)
    seconds = time.perf_counter() - start
    print(f"   {summary} in {seconds:.0f} s", flush=True)
    if summary.n_written:
        _record(name, summary, seconds)


#: Stages in run order: (name, selector of frames). Each labels PBE for all its frames, then r2SCAN
#: train and r2SCAN test for those of its frames that have them.
STAGES = {
    "ordered": lambda a: a.info["kind"] == "ordered" and a.info["cell_type"] != "cubic16",
    "strained": lambda a: a.info["kind"] == "strained" and a.info["cell_type"] != "cubic16",
    "rattled": lambda a: a.info["kind"] == "rattled" and a.info["cell_type"] != "cubic16",
    "hot": lambda a: a.info["kind"] == "hot" and a.info["cell_type"] != "cubic16",
    "cubic16": lambda a: a.info["cell_type"] == "cubic16",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sample"], default=None, help="generate structures, label nothing")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {list(STAGES)}")
    parser.add_argument("--parents", default=None,
                        help="comma-separated parent ids to label (e.g. c8-n4-d3), or 'key' for "
                             f"{', '.join(KEY_PARENTS)}; default all")
    parser.add_argument("--workers", type=int, default=1,
                        help="labelling processes (one thread each; ~2.5 GB of memory each)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    ordered = load_ordered()
    if args.only == "sample":
        load_derived(ordered)
        return 0
    keep = set(KEY_PARENTS if args.parents == "key" else (args.parents or "").split(",")) - {""}
    frames = ordered
    for name in args.stages.split(","):
        if name != "ordered" and len(frames) == len(ordered):
            frames = ordered + load_derived(ordered)
        chosen = sorted((a for a in frames if STAGES[name](a) and (not keep or a.info["parent"] in keep)),
                        key=lambda a: a.info["parent"] not in KEY_PARENTS)
        label(f"{name}_pbe", chosen, "pbe", PBE_OUT, args.workers)
        label(f"{name}_r2scan", [a for a in chosen if a.info["r2scan_split"] == "train"], "r2scan", R2SCAN_OUT,
              args.workers)
        label(f"{name}_r2scan_ref", [a for a in chosen if a.info["r2scan_split"] == "test"], "r2scan", REF_OUT,
              args.workers)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
