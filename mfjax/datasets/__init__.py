"""The multi-fidelity datasets shipped with mfjax (made by experiments/datasets/make_dataset.py).

====================== ========= =============================================================
file                   fidelity  contents
====================== ========= =============================================================
organics_pbe           pbe       methanol, methylamine, formic acid; PBE/def2-SVP energy+forces
organics_r2scan        r2scan    r2SCAN/def2-SVP energy+forces; ``region`` covered (300/600 K,
                                 training) and uncovered (1000/1500 K, test only)
organics_extra_pbe     pbe       formaldehyde, ethylene, water, ammonia, acetaldehyde; PBE/def2-SVP
organics_extra_r2scan  r2scan    formaldehyde and ethylene, r2SCAN/def2-SVP (covered region)
organics_r2scan_test   r2scan    fixed r2SCAN test set (role: test): unseen geometries of the five HF
                                 molecules (region covered) and of the three PBE-only ones (gap)
organics_ccsdt         ccsdt     CCSD(T)/cc-pVDZ (frozen core) energies, no forces
si_pbe                 pbe       2-atom diamond Si cells, PBE/gth-szv energy+forces+stress
si_r2scan              r2scan    same cells (first 15), r2SCAN/gth-szv energy+stress, no forces
sic_pbe                pbe       Si-C cells (experiments/materials/make_dataset.py, a resumable build:
                                 stage "ordered"; strain sets and rattles of Si, C and 3C-SiC;
                                 1200/2400 K Tersoff-MD snapshots of every 8-atom cell and 2H/4H
                                 so far): 8-atom decorations of
                                 diamond at every composition, 2H/4H-SiC, isotropic/uniaxial/shear
                                 strains, rattled and hot cells; PBE/gth-dzv energy+forces+stress,
                                 ke_cutoff 60 Ha, k-mesh in info, Fermi smearing 0.002 Ha (energy: free energy)
sic_r2scan             r2scan    r2SCAN training labels (energy+stress, no forces) of the ordered
                                 cells at x_C = 0, 1/4, 1/2, 3/4, 1, +-2 % strains of Si and C and
                                 one rattle each of Si, C, 3C-SiC (same geometries as sic_pbe)
sic_r2scan_ref         r2scan    r2SCAN reference labels (role: test; never train on them): ordered
                                 cells at the held-out compositions, 2H/4H-SiC, 3C-SiC strain set
====================== ========= =============================================================

Frames share ``info['structure_id']`` across fidelities when the geometry is the same. Units: eV, Å,
eV/Å^3 (ASE stress sign). Use ``info['scf_converged']`` to drop frames whose SCF failed.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL_DIR = Path(__file__).resolve().parent / "models"


def available() -> list[str]:
    """Names of the shipped dataset files (without extension)."""
    return sorted(p.stem for p in DATA_DIR.glob("*.extxyz"))


def dataset_path(name: str) -> Path:
    """Path of a shipped dataset file, e.g. ``dataset_path("organics_pbe")``.

    ``name`` may include the ``.extxyz`` extension. Raises FileNotFoundError listing the available
    names if there is no such file.
    """
    stem = name[: -len(".extxyz")] if name.endswith(".extxyz") else name
    path = DATA_DIR / f"{stem}.extxyz"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped dataset {name!r}; available: {available()}")
    return path


def pretrained_models() -> list[str]:
    """Names of the shipped trained models."""
    return sorted(p.name for p in MODEL_DIR.iterdir() if (p / "model.json").is_file())


def pretrained_model_path(name: str = "organics-small") -> Path:
    """Path of a shipped trained model bundle (load it with ``mfjax.load_model``).

    ``organics-small`` is the export of ``mfjax train configs/quickstart.yaml`` (small preset, PBE +
    r2SCAN, 40 epochs on the shipped organics data; its model.json records the config and test
    metrics). It lets notebooks and MD examples start from a real potential without training.
    """
    path = MODEL_DIR / name
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"no shipped model {name!r}; available: {pretrained_models()}")
    return path


__all__ = ["DATA_DIR", "MODEL_DIR", "available", "dataset_path", "pretrained_models", "pretrained_model_path"]
