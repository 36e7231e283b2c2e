"""The Si–C materials evaluation (experiments/materials/run.py, mfjax.materials.elastic) on a stand-in
dataset labelled by an analytic oracle: the numerics against independent computations (ASE finite
differences, pymatgen phase diagrams), bad inputs, and the --quick pipeline end to end (slow).

The stand-in: the dataset's own geometries (``experiments/materials/structures/*.extxyz``, same
``structure_id``, ``composition``, ``x_C``, ``kind``, ``region``, ``cell_type``, ``strain_type``,
``strain``, ``r2scan_split`` ...) with labels from two analytic potentials instead of DFT:

* ``pbe``: the Tersoff (1989) Si–C potential of ``experiments/materials/structures.py`` (energy,
  forces, stress);
* ``r2scan``: the same potential with scaled parameters (longer decay lengths: larger lattice
  constants; more strongly bound; a weaker Si–C repulsion: more negative formation energies, with
  3C-SiC on the hull and 2H/4H ~1 meV/atom above it as for PBE), energy and stress only, as
  pyscf's r2SCAN labels.

``write_standin(directory)`` writes ``sic_pbe.extxyz``, ``sic_r2scan.extxyz`` and
``sic_r2scan_ref.extxyz`` with the frames the real files will hold (no hot snapshots, no rattles
of the 16-atom cells); ``oracle(fidelity)`` gives the calculator of either level.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from ase.calculators.tersoff import TersoffParameters
from ase.units import GPa
from helpers.synthetic import TINY_MODEL
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition
from scipy.optimize import brentq, minimize_scalar

from mfjax.materials import elastic

REPO = Path(__file__).resolve().parents[1]
MATERIALS = REPO / "experiments" / "materials"
_spec = importlib.util.spec_from_file_location("sic_structures", MATERIALS / "structures.py")
structures = importlib.util.module_from_spec(_spec)  # the dataset's own structure code and Tersoff parameters
_spec.loader.exec_module(structures)
_spec = importlib.util.spec_from_file_location("sic_run", MATERIALS / "run.py")
materials_run = importlib.util.module_from_spec(_spec)  # puts experiments/materials on sys.path
_spec.loader.exec_module(materials_run)
ev = materials_run.ev

#: Parameter scales of the "r2scan" oracle (names of ASE's TersoffParameters).
R2SCAN_SCALES = {"lambda1": 0.99, "lambda2": 0.99, "A": 1.04, "B": 1.04}
#: Extra scale of the repulsive prefactor A of the Si–C pair (entries (Si, C, C) and (C, Si, Si)).
R2SCAN_SIC_REPULSION = 0.99
FILES = {"pbe": "sic_pbe.extxyz", "r2scan": "sic_r2scan.extxyz", "ref": "sic_r2scan_ref.extxyz"}


def oracle(fidelity: str):
    """The analytic calculator of ``fidelity`` ("pbe" or "r2scan")."""
    if fidelity == "pbe":
        return structures.tersoff()
    if fidelity != "r2scan":
        raise ValueError(f"no oracle for fidelity {fidelity!r}")
    params = {}
    for key, values in structures._TERSOFF_SIC.items():
        p = TersoffParameters.from_list(list(values))
        scaled = {name: getattr(p, name) * s for name, s in R2SCAN_SCALES.items()}
        if key in (("Si", "C", "C"), ("C", "Si", "Si")):
            scaled["A"] *= R2SCAN_SIC_REPULSION
        params[key] = TersoffParameters(**{**p.__dict__, **scaled})
    return structures._Tersoff(params)


def _label(atoms, fidelity: str, calc):
    out = atoms.copy()
    out.calc = calc
    results = {"energy": out.get_potential_energy(), "stress": out.get_stress()}
    if fidelity == "pbe":
        results["forces"] = out.get_forces()
    out.calc = SinglePointCalculator(out, **results)
    out.info.update(fidelity=fidelity, scf_converged=True)
    return out


def standin_frames() -> dict[str, list]:
    """{"pbe", "r2scan", "ref"}: the labelled frames of the three files."""
    ordered = ase.io.read(MATERIALS / "structures" / "sic_ordered.extxyz", ":")
    derived = ase.io.read(MATERIALS / "structures" / "sic_derived.extxyz", ":")
    chosen = ordered + [a for a in derived if a.info["kind"] in ("strained", "rattled")
                        and a.info["cell_type"] != "cubic16"]
    pbe, r2scan = oracle("pbe"), oracle("r2scan")
    return {
        "pbe": [_label(a, "pbe", pbe) for a in chosen],
        "r2scan": [_label(a, "r2scan", r2scan) for a in chosen if a.info["r2scan_split"] == "train"],
        "ref": [_label(a, "r2scan", r2scan) for a in chosen if a.info["r2scan_split"] == "test"],
    }


def write_standin(directory) -> dict[str, Path]:
    """Write the three stand-in files into ``directory``; {"pbe", "r2scan", "ref"} -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frames in standin_frames().items():
        paths[name] = directory / FILES[name]
        ase.io.write(paths[name], frames, format="extxyz")
    return paths


CONFIG = MATERIALS / "config.yaml"


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """The stand-in files and a materials config on them (tiny model)."""
    directory = tmp_path_factory.mktemp("sic")
    paths = write_standin(directory / "data")
    raw = yaml.safe_load(CONFIG.read_text())
    for d, key in zip(raw["data"]["datasets"], ("pbe", "r2scan", "ref")):
        d["path"] = str(paths[key])
    raw["model"] = dict(TINY_MODEL)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


@pytest.fixture(scope="module")
def loaded(standin):
    cfg, _, evaluation = materials_run.load(standin)
    return ev.ReferenceSet.load(cfg, "r2scan"), evaluation


def _oracle_predictor(fidelity: str):
    calc = oracle(fidelity)

    def predict(frames):
        out = []
        for atoms in frames:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append({"energy": atoms.get_potential_energy(), "stress": atoms.get_stress()})
        return out

    return predict


def _sic_cell():
    """The dataset's 3C-SiC cell (the parent of the strain set)."""
    (cell,) = [a for a in ase.io.read(MATERIALS / "structures" / "sic_ordered.extxyz", ":")
               if a.info["structure_id"] == "c8-n4-d3"]
    return cell


def test_fit_cubic_elastic_recovers_a_known_tensor_and_names_missing_strains():
    c11, c12, c44 = 0.3, 0.1, 0.2  # eV/Å^3
    C = np.zeros((6, 6))
    C[:3, :3] = c12
    C[np.arange(3), np.arange(3)] = c11
    C[np.arange(3, 6), np.arange(3, 6)] = c44
    s0 = np.array([0.01, 0.01, 0.01, 0.0, 0.0, 0.0])
    strains = [np.r_[e, e, e, 0, 0, 0] for e in (-0.02, 0.02)] + [np.eye(6)[0] * e for e in (-0.01, 0.01)] \
        + [np.eye(6)[3] * e for e in (-0.02, 0.02)]
    fit = elastic.fit_cubic_elastic(strains, [s0 + C @ e for e in strains])
    assert (fit.c11, fit.c12, fit.c44) == pytest.approx((c11 / GPa, c12 / GPa, c44 / GPa), rel=1e-10)
    assert fit.residual_stress[0] == pytest.approx(0.01 / GPa) and fit.rms_residual < 1e-9
    with pytest.raises(ValueError, match="shear"):
        elastic.fit_cubic_elastic(strains[:4], [s0 + C @ e for e in strains[:4]])
    assert np.allclose(elastic.strain_from_cells(np.eye(3) * 4.0, 4.0 * (np.eye(3) + structures.voigt_strain(3, 0.02))),
                       [0, 0, 0, 0.02, 0, 0])


def test_elastic_constants_of_the_oracle_match_ase_finite_differences(loaded):
    reference, settings = loaded
    values = ev.evaluate(None, reference, settings).scalars  # from the stand-in's r2SCAN strain frames
    cell = _sic_cell()
    calc = oracle("r2scan")

    def stress_at(strain: np.ndarray) -> np.ndarray:
        atoms = structures.strained(cell, strain)
        atoms.calc = calc
        return atoms.get_stress()

    def stress(component: int, value: float) -> np.ndarray:
        return stress_at(structures.voigt_strain(component, value))

    h = 1e-4  # independent: central differences of ASE stresses at tiny strains
    d1 = (stress(0, h) - stress(0, -h)) / (2 * h) / GPa
    d4 = (stress(3, h) - stress(3, -h)) / (2 * h) / GPa
    # the pipeline fits +-1 % (uniaxial), +-2 % (shear and isotropic) strains: finite-strain terms
    # of ~1 % of C11 (measured: C11 +0.4 %, C12 +1.5 GPa of 60, C44 +0.01 %)
    assert values["c11"] == pytest.approx(d1[0], rel=0.02)
    assert values["c12"] == pytest.approx(d1[1], abs=0.02 * d1[0])
    assert values["c44"] == pytest.approx(d4[3], rel=0.02)
    # the fit itself is exact on tiny strains
    tensors = [structures.voigt_strain(k, s) for k in (0, 3) for s in (-h, h)] + [s * np.eye(3) for s in (-h, h)]
    fit = elastic.fit_cubic_elastic([elastic.voigt_strain_vector(e) for e in tensors], [stress_at(e) for e in tensors])
    assert (fit.c11, fit.c12, fit.c44) == pytest.approx((d1[0], d1[1], d4[3]), rel=1e-3)


def test_lattice_constant_and_bulk_modulus_match_ase(loaded):
    reference, settings = loaded
    values = ev.evaluate(None, reference, settings).scalars
    cell = _sic_cell()
    calc = oracle("r2scan")
    a_ref = cell.get_volume() ** (1 / 3)

    def scaled(a):
        atoms = structures.strained(cell, (a / a_ref - 1.0) * np.eye(3))
        atoms.calc = calc
        return atoms

    a_zero = brentq(lambda a: scaled(a).get_stress()[:3].mean(), 0.95 * a_ref, 1.05 * a_ref, xtol=1e-8)
    a_min = minimize_scalar(lambda a: scaled(a).get_potential_energy(), bounds=(0.95 * a_ref, 1.05 * a_ref),
                            method="bounded", options={"xatol": 1e-7}).x
    assert a_zero == pytest.approx(a_min, abs=1e-4)  # a consistent oracle: dE/dV = 0 where the stress vanishes
    assert values["a0_stress"] == pytest.approx(a_zero, abs=2e-3)
    assert values["a0_eos"] == pytest.approx(a_min, abs=2e-3)
    v0, h = a_min**3, 1e-3  # B = V d2E/dV2 at the minimum, by finite differences
    energy = lambda v: scaled(v ** (1 / 3)).get_potential_energy()  # noqa: E731
    b = v0 * (energy(v0 * (1 + h)) - 2 * energy(v0) + energy(v0 * (1 - h))) / (v0 * h) ** 2 / GPa
    assert values["b_eos"] == pytest.approx(b, rel=0.03)


def test_a_partial_strain_set_gives_nan_not_an_error(loaded):
    """While the dataset is being labelled the strain set may hold only the unstrained cell (or one
    strain): every elastic quantity is then NaN (reported as absent) instead of an exception."""
    reference, _ = loaded
    cells = [f for f in reference.select(parent="c8-n4-d3") if f.get("kind") == "ordered"]
    cells += [f for f in reference.select(parent="c8-n4-d3") if f.get("strain_type") == "isotropic"][:1]
    one, two = (ev.elastic_properties(c, [f.energy for f in c], [f.stress for f in c], 0.021) for c in (cells[:1], cells))
    assert set(one) >= {"a0_eos", "a0_stress", "c11"} and all(np.isnan(v) for v in one.values())
    assert np.isfinite(two["a0_stress"]) and np.isnan(two["c11"]) and np.isnan(two["a0_eos"])  # 2 strains: a line


def test_formation_energies_and_hull_distances_match_pymatgen(loaded):
    reference, settings = loaded
    result = ev.evaluate(_oracle_predictor("pbe"), reference, settings)  # PBE oracle scored against r2SCAN labels
    cells, heldout, tested = ev.hull_sets(reference, settings)
    assert {c.get("structure_id") for c in (cells[k] for k in tested)} >= {"sic-2H", "sic-4H", "c16-n7"}
    assert all(cells[k].get("region") == "hf_heldout" for k in heldout) and len(heldout) == 12
    predicted = _oracle_predictor("pbe")([c.atoms for c in cells])
    both = {}
    for name, energies in (("pred", [p["energy"] for p in predicted]), ("ref", [c.energy for c in cells])):
        entries = [PDEntry(Composition(c.atoms.get_chemical_formula()), e) for c, e in zip(cells, energies)]
        diagram = PhaseDiagram(entries)
        both[name] = (np.array([diagram.get_form_energy_per_atom(e) for e in entries]),
                      np.array([diagram.get_e_above_hull(e) for e in entries]))
    form_err = 1000 * np.abs(both["pred"][0] - both["ref"][0])[heldout]
    hull_err = 1000 * np.abs(both["pred"][1] - both["ref"][1])[tested]
    assert result.scalars["formation_mae_mev_atom"] == pytest.approx(form_err.mean(), abs=1e-6)
    assert result.scalars["e_hull_mae_mev_atom"] == pytest.approx(hull_err.mean(), abs=1e-6)
    assert result.scalars["formation_mae_mev_atom"] > 5.0  # the two oracles differ
    stable_pred = both["pred"][1][tested] <= settings.threshold
    stable_ref = both["ref"][1][tested] <= settings.threshold
    tp = int(np.sum(stable_pred & stable_ref))
    assert stable_ref.sum() >= 2  # 2H and 4H lie ~1 meV/atom above 3C-SiC
    assert result.scalars["precision"] == pytest.approx(tp / stable_pred.sum())
    assert result.scalars["recall"] == pytest.approx(tp / stable_ref.sum())
    # the reference scored against itself is exact
    exact = ev.evaluate(_oracle_predictor("r2scan"), reference, settings).scalars
    assert exact["formation_mae_mev_atom"] < 1e-6 and exact["e_hull_mae_mev_atom"] < 1e-6 and exact["f1"] == 1.0
    assert exact["formation_r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("overrides, message", [
    (["evaluation.md.refrence=hf_only"], "did you mean 'reference'"),
    (["evaluation.md.reference=multi_fidelity_heads"], "not among ablation.strategies"),
    (["ablation.export=false"], "ablation.export must be true"),
    (["evaluation.md.supercell=[2,2]"], "supercell"),
])
def test_bad_config_is_one_line_and_exit_2(standin, tmp_path, capsys, overrides, message):
    argv = [str(standin), "--output", str(tmp_path / "out")] + [x for o in overrides for x in ("--set", o)]
    assert materials_run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_missing_config_is_exit_2(tmp_path, capsys):
    assert materials_run.main([str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "out")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_shipped_config_loads():
    cfg, settings, evaluation = materials_run.load(CONFIG)
    assert settings.strategies == ("hf_only", "transfer", "delta", "multi_fidelity", "append")
    assert (settings.low, settings.high, settings.export) == ("pbe", "r2scan", True)
    assert cfg.train.best_metric == "energy_mae_mev_atom" and cfg.train.compute_stress
    assert evaluation.md.reference in settings.strategies
    assert [Path(d.path).name for d in cfg.data.datasets] == ["sic_pbe.extxyz", "sic_r2scan.extxyz",
                                                             "sic_r2scan_ref.extxyz"]


@pytest.mark.slow
def test_quick_pipeline_end_to_end_on_the_standin(standin, tmp_path):
    out = tmp_path / "out"
    rows = materials_run.run(standin, out, quick=True, overrides=["ablation.seeds=2", "evaluation.md.engine=ase"],
                             log=lambda line: None)
    assert {r["strategy"] for r in rows} == {"hf_only", "transfer", "delta", "multi_fidelity", "append"}
    assert len(rows) == 10
    for r in rows:
        assert np.isfinite(r["formation_mae_mev_atom"]) and np.isfinite(r["c11"]) and r["stability_time_ps"] > 0
        assert (r["stability_failure"] == "") == bool(r["stability_stable"])  # run_md's reason, "" when stable
        if r["strategy"] == "hf_only" and np.isfinite(r["diffusion_a2_ps"]):
            assert r["diffusion_ratio"] == pytest.approx(1.0)
    with open(out / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 10
    text = (out / "results.md").read_text()
    assert "**r2SCAN reference**" in text and "| delta | 1 | 2 |" in text and "[" in text
    assert "- delta (1), stability: seed 0: " in text
    for name in ("formation.png", "elastic.png", "md.png", "per_structure.csv", "reference.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "ablation" / "runs" / "delta_f1_s1" / "model").is_dir()
