"""Materials evaluation of one potential against the r2SCAN reference frames (used by ``run.py``).

``EvaluationSettings`` is the ``evaluation:`` section of ``config.yaml``. ``ReferenceSet.load``
reads every high-fidelity frame of the config's datasets (training file and ``role: test`` file;
unconverged SCF frames dropped) with its labels. ``evaluate(predict, reference, settings)`` takes
any predictor (a list of ``ase.Atoms`` -> a list of {"energy", "stress"}) and returns scalar
metrics plus per-structure errors:

* formation energies per atom at the held-out compositions (``heldout``): model energies of every
  ordered cell, the elemental references (diamond Si, diamond C) evaluated by the same model
  (``mfjax.materials.hull.hull_table``), against the same from the r2SCAN labels;
* energies above the hull of the ordered reference-file cells (held-out compositions, 2H, 4H) and
  stable/unstable precision, recall, F1 at ``threshold`` against the r2SCAN hull;
* 3C-SiC (``elastic_parent``) lattice constant from E(V) and from the stress zero of the isotropic
  strains, bulk modulus (E(V)), clamped-ion C11, C12, C44 from stress–strain
  (``mfjax.materials.elastic``), all on the same strained geometries as the r2SCAN frames.

``md_properties(model, atoms, md, fidelity)`` runs the two MD tests (``mfjax.md.simulate.run_md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import ase
import numpy as np

from mfjax.config import Config
from mfjax.errors import ConfigError, DataError
from mfjax.materials import elastic
from mfjax.materials.hull import classification_metrics, entries_from_atoms, hull_table
from mfjax.materials.io import label_energies, read_frames
from mfjax.md.config import MDConfig
from mfjax.md.simulate import run_md
from mfjax.utils.configtools import option

__all__ = ["MDSettings", "EvaluationSettings", "Labelled", "ReferenceSet", "evaluate", "elastic_properties",
           "md_properties", "strain_of"]

Predictor = Callable[[Sequence[ase.Atoms]], list]


@dataclass(frozen=True)
class MDSettings:
    """The MD tests: stability at a high temperature and diffusion in a hot (melting) cell."""

    enabled: bool = option(True, "Run the MD tests.")
    reference: str = option("hf_only", "Strategy whose model (same HF fraction and seed) is the MD reference: the "
                            "potential trained on all r2SCAN training frames only (there are no r2SCAN MD data).")
    structure: str = option("c8-n4-d3", "structure_id of the starting cell (3C-SiC), from the r2SCAN frames.")
    supercell: tuple[int, ...] = option((2, 2, 2), "Repetitions of the starting cell.")
    engine: Literal["jaxmd", "ase"] = option("jaxmd", "MD engine (mfjax.md).")
    timestep: float = option(1.0, "fs.")
    interval: int = option(20, "Steps between saved frames and stability checks.")
    min_distance: float = option(1.2, "Å: two atoms closer than this = failed (the data's closest pair is 1.415 Å).")
    stability_temperature: float = option(2500.0, "K: NVT (Langevin) stability run.")
    stability_steps: int = option(2000, "Steps of the stability run.")
    transport_temperature: float = option(4500.0, "K: NVT run of the hot cell for the diffusion coefficient.")
    transport_steps: int = option(4000, "Steps of the transport run.")
    species: str = option("Si", "Element whose diffusion coefficient is reported.")
    seed: int = option(0, "Seed of velocities and thermostat noise (the same for every model).")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluation:`` section of the materials config (run.py)."""

    fidelity: str | None = option(None, "Fidelity the models predict (null = ablation.high).")
    threshold: float = option(0.01, "eV/atom: stable = energy above the hull <= threshold.")
    heldout_key: str = option("region", "atoms.info key marking the held-out compositions.")
    heldout_value: str = option("hf_heldout", "Value of heldout_key at the held-out compositions.")
    hull_kind: str = option("ordered", "info['kind'] of the cells that make the hull.")
    elastic_parent: str = option("c8-n4-d3", "info['parent'] of the strain set (3C-SiC).")
    elastic_max_strain: float = option(0.021, "Largest |strain| used in the stress–strain fit.")
    md: MDSettings = option(doc="The MD tests.", factory=MDSettings)
    quick: tuple[str, ...] = option((), "evaluation.* overrides applied by --quick (relative to this section).")

    def validate(self, where: str = "evaluation") -> None:
        if not self.threshold >= 0 or not self.elastic_max_strain > 0:
            raise ConfigError(f"{where}: threshold must be >= 0 and elastic_max_strain > 0")
        m = self.md
        if len(m.supercell) != 3 or min(m.supercell) < 1 or m.timestep <= 0 or min(m.stability_steps, m.transport_steps, m.interval) < 1:
            raise ConfigError(f"{where}.md: supercell (three counts), timestep, steps and interval must be positive")


@dataclass
class Labelled:
    """One reference frame: the structure, where it came from, its labels and whether it is a test frame."""

    atoms: ase.Atoms
    name: str
    energy: float
    stress: np.ndarray | None
    test: bool

    def get(self, key: str, default: Any = None) -> Any:
        return self.atoms.info.get(key, default)


def _stress(atoms: ase.Atoms) -> np.ndarray | None:
    results = getattr(atoms.calc, "results", None) or {}
    value = results.get("stress", atoms.info.get("stress"))
    if value is None:
        return None
    value = np.asarray(value, np.float64)
    if value.shape == (3, 3):
        value = np.array([value[i, j] for i, j in elastic.VOIGT_PAIRS])
    return value


@dataclass
class ReferenceSet:
    """Every labelled high-fidelity frame of the config (one per structure_id; test file wins)."""

    frames: list[Labelled]
    fidelity: str
    dropped: int = 0

    @classmethod
    def load(cls, cfg: Config, fidelity: str) -> "ReferenceSet":
        by_id: dict[str, Labelled] = {}
        dropped = 0
        for d in cfg.data.datasets:
            if d.fidelity is not None and d.fidelity != fidelity:
                continue
            frames = read_frames(d.path) if d.fidelity is not None else [
                f for f in read_frames(d.path) if str(f.atoms.info.get("fidelity")) == fidelity]
            for f in frames:
                if f.atoms.info.get("scf_converged", True) in (False, "False", "F"):
                    dropped += 1
                    continue
                sid = f.atoms.info.get("structure_id")
                if sid is None:
                    raise DataError("no structure_id (needed to match frames across files)", source=f.source,
                                    frame=f.index, field="structure_id")
                (energy,) = label_energies([f])
                labelled = Labelled(f.atoms, f.name, energy, _stress(f.atoms), d.role == "test")
                if str(sid) not in by_id or labelled.test:
                    by_id[str(sid)] = labelled
        if not by_id:
            raise DataError(f"no {fidelity!r} frames in data.datasets: nothing to evaluate against")
        return cls(list(by_id.values()), fidelity, dropped)

    def select(self, **info: Any) -> list[Labelled]:
        return [f for f in self.frames if all(str(f.get(k)) == str(v) for k, v in info.items())]


def strain_of(frame: Labelled) -> np.ndarray:
    """Voigt strain of a frame of the strain set from its info (strain_type isotropic | voigtK, strain)."""
    kind, value = frame.get("strain_type"), float(frame.get("strain", 0.0) or 0.0)
    if frame.get("kind") == "ordered" or kind is None:
        return np.zeros(6)
    if kind == "isotropic":
        return np.array([value, value, value, 0.0, 0.0, 0.0])
    if str(kind).startswith("voigt"):
        e = np.zeros(6)
        e[int(str(kind)[5:]) - 1] = value
        return e
    raise DataError(f"unknown strain_type {kind!r}", source=frame.name, field="strain_type")


def elastic_properties(frames: Sequence[Labelled], energies: Sequence[float], stresses: Sequence,
                       max_strain: float) -> dict[str, float]:
    """a0 (E(V) and stress zero, Å, per 8-atom cubic cell), B (E(V), GPa), C11, C12, C44 and
    (C11 + 2 C12) / 3 (GPa) of a strain set with its energies and stresses (labels or a model's)."""
    strains = np.array([strain_of(f) for f in frames])
    stresses = np.asarray(stresses, np.float64)
    iso = [k for k, e in enumerate(strains) if np.allclose(e[:3], e[0]) and np.allclose(e[3:], 0.0)]
    n_atoms = len(frames[0].atoms)
    out = dict.fromkeys(("a0_eos", "b_eos", "a0_stress", "c11", "c12", "c44", "b_stress"), math.nan)
    volumes = np.array([frames[k].atoms.get_volume() * 8.0 / len(frames[k].atoms) for k in iso])
    try:
        eos = elastic.fit_eos(volumes, [energies[k] * 8.0 / len(frames[k].atoms) for k in iso])
        out.update(a0_eos=eos.v0 ** (1.0 / 3.0), b_eos=eos.bulk_modulus)
    except (ValueError, RuntimeError):
        pass
    base = [k for k in iso if strains[k][0] == 0.0]
    if base and len({float(strains[k][0]) for k in iso}) >= 2:  # a partial strain set: NaN, not an error
        a_ref = frames[base[0]].atoms.get_volume() ** (1.0 / 3.0) * (8.0 / n_atoms) ** (1.0 / 3.0)
        e0 = elastic.zero_stress_strain(strains[iso, 0], stresses[iso])
        out["a0_stress"] = a_ref * (1.0 + e0)
    small = [k for k, e in enumerate(strains) if np.abs(e).max() <= max_strain]
    try:
        fit = elastic.fit_cubic_elastic(strains[small], stresses[small])
        out.update(c11=fit.c11, c12=fit.c12, c44=fit.c44, b_stress=fit.bulk_modulus)
    except ValueError:
        pass
    return out


@dataclass
class Evaluation:
    """Scalar metrics (``scalars``), per-structure absolute errors (``errors``: name -> [N]) and
    per-structure values (``table``: rows for per_structure.csv)."""

    scalars: dict[str, float] = field(default_factory=dict)
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)


def _r2(pred: np.ndarray, ref: np.ndarray) -> float:
    spread = float(np.sum((ref - ref.mean()) ** 2))
    return 1.0 - float(np.sum((pred - ref) ** 2)) / spread if spread > 0 and len(ref) > 1 else math.nan


def hull_sets(reference: ReferenceSet, settings: EvaluationSettings) -> tuple[list[Labelled], list[int], list[int]]:
    """(hull cells, indices of the held-out cells, indices of the reference-file cells) among them."""
    cells = reference.select(kind=settings.hull_kind)
    heldout = [k for k, f in enumerate(cells) if f.test and str(f.get(settings.heldout_key)) == settings.heldout_value]
    tested = [k for k, f in enumerate(cells) if f.test]
    return cells, heldout, tested


def evaluate(predict: Predictor | None, reference: ReferenceSet, settings: EvaluationSettings) -> Evaluation:
    """Metrics of ``predict`` against the labels (``predict=None``: the labels themselves, the
    reference values; its scalars are the reference quantities)."""
    out = Evaluation()
    cells, heldout, tested = hull_sets(reference, settings)
    strain_set = [f for f in reference.select(parent=settings.elastic_parent) if f.get("kind") in ("ordered", "strained")]
    frames = cells + strain_set
    if predict is None:
        energies = [f.energy for f in frames]
        stresses = [f.stress for f in frames]
    else:
        predictions = predict([f.atoms for f in frames])
        energies = [p["energy"] for p in predictions]
        stresses = [p.get("stress") for p in predictions]
    names = [str(f.get("structure_id")) for f in cells]
    ref_rows = hull_table(entries_from_atoms([f.atoms for f in cells], [f.energy for f in cells], names), settings.threshold)
    rows = hull_table(entries_from_atoms([f.atoms for f in cells], energies[: len(cells)], names), settings.threshold)
    e_form = np.array([[r.formation_energy_per_atom, q.formation_energy_per_atom] for r, q in zip(rows, ref_rows)])
    e_hull = np.array([[r.e_above_hull, q.e_above_hull] for r, q in zip(rows, ref_rows)])
    for k, (f, r, q) in enumerate(zip(cells, rows, ref_rows)):
        out.table.append({"structure_id": names[k], "composition": f.get("composition"), "x_C": f.get("x_C"),
                          "heldout": int(k in heldout), "test": int(f.test),
                          "e_form_mev_atom": 1000 * r.formation_energy_per_atom,
                          "ref_e_form_mev_atom": 1000 * q.formation_energy_per_atom,
                          "e_hull_mev_atom": 1000 * r.e_above_hull, "ref_e_hull_mev_atom": 1000 * q.e_above_hull})
    s = out.scalars
    if heldout:
        err = 1000 * np.abs(e_form[heldout, 0] - e_form[heldout, 1])
        out.errors["formation"] = err
        s.update(formation_mae_mev_atom=float(err.mean()), formation_r2=_r2(e_form[heldout, 0], e_form[heldout, 1]),
                 n_heldout=len(heldout))
    if tested:
        err = 1000 * np.abs(e_hull[tested, 0] - e_hull[tested, 1])
        out.errors["e_hull"] = err
        m = classification_metrics(e_hull[tested, 0], e_hull[tested, 1], settings.threshold)
        s.update(e_hull_mae_mev_atom=float(err.mean()), precision=m.precision, recall=m.recall, f1=m.f1,
                 accuracy=m.accuracy, n_stable_ref=m.tp + m.fn, n_hull_test=len(tested))
    if strain_set:
        n = len(cells)
        if predict is None and any(x is None for x in stresses[n:]):
            raise DataError(f"a frame of the strain set of {settings.elastic_parent} has no stress label")
        s.update(elastic_properties(strain_set, energies[n:], stresses[n:], settings.elastic_max_strain))
    return out


def md_properties(model: Any, atoms: ase.Atoms, md: MDSettings, fidelity: str) -> dict[str, float | str]:
    """Time to failure (ps; the run length if it never failed) of the stability run, and the
    diffusion coefficient of ``md.species`` (Å^2/ps; nan when the transport run failed: ``run_md`` fits no failed
    trajectory) and the time to failure of the transport run; ``*_failure``: ``run_md``'s reason ("" when stable)."""
    cell = atoms.repeat(tuple(md.supercell))
    cell.calc = None
    out = {}
    for name, temperature, steps in (("stability", md.stability_temperature, md.stability_steps),
                                     ("transport", md.transport_temperature, md.transport_steps)):
        cfg = MDConfig(fidelity=fidelity, ensemble="nvt", temperature=temperature, timestep=md.timestep, steps=steps,
                       interval=md.interval, engine=md.engine, seed=md.seed, min_distance=md.min_distance,
                       msd_species=md.species if name == "transport" else None, quiet=True)
        result = run_md(model, cell, cfg, progress=None)
        failed = result.failure_time_fs
        out[f"{name}_time_ps"] = (steps * md.timestep if failed is None else failed) / 1000.0
        out[f"{name}_stable"] = float(result.stable)
        out[f"{name}_failure"] = result.failure or ""
        if name == "transport":
            out["diffusion_a2_ps"] = math.nan if result.diffusion is None else 1000.0 * result.diffusion.D
    return out
