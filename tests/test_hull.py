"""Phase stability (``mfjax.materials.hull`` and ``mfjax hull``): energies above the hull and formation
energies against pymatgen called directly and against hand calculations, Matbench-Discovery
classification metrics on a made-up example, the CLI from labels and from a model, and bad inputs
exiting 2 with one line naming the file, frame or field."""

from __future__ import annotations

import csv
import json
import math

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

from mfjax import cli
from mfjax.errors import DataError
from mfjax.materials.hull import HullEntry, classification_metrics, compare, entries_from_atoms, hull_table
from mfjax.md.cli import load_model

# (composition, total energy eV): Si and Ge at 0, SiGe on the hull at -1 eV/atom, Si3Ge 0.1 eV/atom above
# the Si-SiGe tie-line (-0.5 eV/atom at x_Ge = 1/4), a Si polymorph 0.4 eV/atom above Si, SiGe2 on or off.
SET = [("Si2", 0.0), ("Ge", -0.0), ("SiGe", -2.0), ("Si3Ge", -1.6), ("Si", 0.4), ("SiGe2", -2.25)]


def entries(energies=None) -> list[HullEntry]:
    return [HullEntry(f"e{k}", formula, e if energies is None else energies[k]) for k, (formula, e) in enumerate(SET)]


def test_hull_matches_pymatgen_and_hand_calculation():
    rows = hull_table(entries())
    pd_entries = [PDEntry(formula, e) for formula, e in SET]
    diagram = PhaseDiagram(pd_entries)
    for row, pd_entry in zip(rows, pd_entries):
        np.testing.assert_allclose(row.e_above_hull, diagram.get_e_above_hull(pd_entry), atol=1e-8)
        np.testing.assert_allclose(row.formation_energy_per_atom, diagram.get_form_energy_per_atom(pd_entry), atol=1e-12)
        np.testing.assert_allclose(row.energy_per_atom, pd_entry.energy_per_atom, atol=1e-12)
    # by hand: SiGe2 (x_Ge = 2/3) against the SiGe (-1 at 1/2) - Ge (0 at 1) tie-line: -2/3 eV/atom;
    # it has -0.75, so it is on the hull and SiGe too (the SiGe-SiGe2 line at 1/2: -1).
    by_hand = {"Si": 0.0, "Ge": 0.0, "SiGe": 0.0, "Si3Ge": 0.1, "SiGe2": 0.0}
    assert [r.e_above_hull for r in rows] == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.4, 0.0], abs=1e-12)
    assert [r.formation_energy_per_atom for r in rows] == pytest.approx([0.0, 0.0, -1.0, -0.4, 0.4, -0.75])
    assert [r.stable for r in rows] == [True, True, True, False, False, True]
    assert {r.formula: r.e_above_hull for r in rows if r.name != "e4"} == pytest.approx(by_hand, abs=1e-12)
    assert [(r.formula, r.n_atoms) for r in rows][:4] == [("Si", 2), ("Ge", 1), ("SiGe", 2), ("Si3Ge", 4)]
    # SiGe2 lifted above the tie-line: E_hull = E - (-2/3) per atom
    lifted = hull_table(entries([e if f != "SiGe2" else -1.8 for f, e in SET]))
    assert lifted[-1].e_above_hull == pytest.approx(-0.6 + 2 / 3)
    assert hull_table(entries(), threshold=0.15)[3].stable  # Si3Ge within 0.15 eV/atom


def test_elemental_reference_is_the_lowest_energy_polymorph():
    rows = hull_table([HullEntry("a", "Si", 0.3), HullEntry("b", "Si2", -0.2), HullEntry("c", "Ge", 0.0),
                       HullEntry("d", "SiGe", -1.1)])
    # Si reference: -0.1 eV/atom (b); SiGe formation: -0.55 - (-0.1 + 0) / 2 = -0.5
    assert [r.formation_energy_per_atom for r in rows] == pytest.approx([0.4, 0.0, 0.0, -0.5])
    assert [r.e_above_hull for r in rows] == pytest.approx([0.4, 0.0, 0.0, 0.0], abs=1e-12)


def test_missing_elemental_reference_names_the_element():
    with pytest.raises(DataError, match="no elemental structure of Ge in the set"):
        hull_table([HullEntry("a", "Si", 0.0), HullEntry("b", "SiGe", -1.0)])


def test_classification_metrics_made_up_example():
    ref = [-0.05, 0.0, 0.02, 0.3, -0.1, 0.5, 0.01, 0.0]    # stable at 0: 0 1 4 7
    pred = [-0.01, 0.1, -0.02, 0.2, 0.0, -0.3, 0.2, 0.0]   # stable at 0: 0 2 4 5 7
    m = classification_metrics(pred, ref, threshold=0.0)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 2, 2, 1)
    assert m.precision == pytest.approx(3 / 5) and m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75)) and m.accuracy == pytest.approx(5 / 8)
    loose = classification_metrics(pred, ref, threshold=0.05)  # 0 1 2 4 6 7 vs 0 2 4 5 7
    assert (loose.tp, loose.fp, loose.tn, loose.fn) == (4, 1, 1, 2)
    none = classification_metrics([0.1, 0.2], [0.0, 0.3])
    assert none.tp == 0 and math.isnan(none.precision) and none.recall == 0.0 and none.f1 == 0.0


def test_compare_errors_and_metrics():
    pred = hull_table(entries())
    ref = hull_table(entries([0.0, 0.0, -2.2, -2.4, 0.2, -2.25]))  # Si3Ge on the hull, Si polymorph 0.2
    metrics = compare(pred, ref)
    assert metrics["mae_e_above_hull"] == pytest.approx((0.1 + 0.2) / 6)
    assert metrics["mae_formation_energy"] == pytest.approx((0.1 + 0.2 + 0.2) / 6)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (4, 1, 1, 0)
    with pytest.raises(DataError, match="reference must hold the same structures"):
        compare(pred, ref[:-1])


def labelled(formula: str, energy: float | None, fidelity: str | None = None) -> ase.Atoms:
    atoms = ase.Atoms(formula, cell=np.eye(3) * 10.0, pbc=True)
    atoms.positions = np.arange(len(atoms))[:, None] * np.array([2.3, 0.0, 0.0])
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
    if fidelity is not None:
        atoms.info["fidelity"] = fidelity
    return atoms


@pytest.fixture(autouse=True)
def _one_blas_thread(one_blas_thread):
    """Every test here runs with one BLAS thread (conftest.one_blas_thread)."""


def test_cli_labels_with_reference(tmp_path, capsys):
    frames = [labelled(f, e, "pbe") for f, e in SET] + [labelled(f, e + 1.0, "r2scan") for f, e in SET]
    ase.io.write(tmp_path / "set.extxyz", frames)
    ref = [labelled(f, e) for f, e in zip([f for f, _ in SET], [0.0, 0.0, -2.2, -2.4, 0.2, -2.25])]
    ase.io.write(tmp_path / "ref.extxyz", ref)
    out = tmp_path / "hull.csv"
    code = cli.main(["hull", str(tmp_path / "set.extxyz"), "--energies-from", "labels", "--fidelity", "pbe",
                     "--reference", str(tmp_path / "ref.extxyz"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Si3Ge" in text and "precision 1.000 recall 0.800" in text and "4 of 6 stable" in text
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["e_above_hull"]) for r in rows] == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.4, 0.0], abs=1e-9)
    assert [r["ref_stable"] for r in rows] == ["True", "True", "True", "True", "False", "True"]
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["f1"] == pytest.approx(2 * 0.8 / 1.8) and metrics["mae_e_above_hull"] == pytest.approx(0.05)


def force_shifted_lj_energy(atoms: ase.Atoms, model, fidelity: str) -> float:
    """The toy model's energy by hand: pairs from ASE's neighbour list, phi shifted in value and slope."""
    eps = float(model.variables["params"]["epsilon"][model.fidelity_index(fidelity)])
    sigma, rc = float(model.variables["params"]["sigma"]), model.cutoff
    d = neighbor_list("d", atoms, rc)  # every pair twice

    def phi(r):
        return 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)

    dphi_rc = 4 * eps * (-12 * sigma**12 / rc**13 + 6 * sigma**6 / rc**7)
    return 0.5 * float(np.sum(phi(d) - phi(rc) - (d - rc) * dphi_rc))


def test_cli_model_energies_json(tmp_path, capsys):
    frames = [ase.build.bulk("Si", "diamond", a=5.4), ase.build.bulk("Ge", "diamond", a=5.65),
              ase.build.bulk("SiGe", "zincblende", a=5.5), ase.build.bulk("Si", "fcc", a=3.9)]
    ase.io.write(tmp_path / "s.extxyz", frames)
    out = tmp_path / "hull.json"
    assert cli.main(["hull", str(tmp_path / "s.extxyz"), "--energies-from", "model", "--model", "toy-lj",
                     "--fidelity", "low", "--out", str(out)]) == 0
    assert "4 structures, 1 compilations" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    energies = [force_shifted_lj_energy(atoms, load_model("toy-lj", "float32"), "low") for atoms in frames]
    pd_entries = [PDEntry(a.get_chemical_formula(), e) for a, e in zip(frames, energies)]
    diagram = PhaseDiagram(pd_entries)
    np.testing.assert_allclose([r["energy"] for r in rows], energies, rtol=1e-6)
    np.testing.assert_allclose([r["e_above_hull"] for r in rows],
                               [diagram.get_e_above_hull(e) for e in pd_entries], atol=1e-6)
    np.testing.assert_allclose([r["formation_energy_per_atom"] for r in rows],
                               [diagram.get_form_energy_per_atom(e) for e in pd_entries], atol=1e-6)


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    good = tmp_path / "good.extxyz"
    ase.io.write(good, [labelled("Si", -1.0), labelled("Ge", -1.0)])
    unlabelled = tmp_path / "unlabelled.extxyz"
    ase.io.write(unlabelled, [labelled("Si", -1.0), labelled("Ge", None)])
    mixed = tmp_path / "mixed.extxyz"
    ase.io.write(mixed, [labelled("Si", -1.0, "pbe"), labelled("Ge", -1.0, "r2scan")])
    short = tmp_path / "short.extxyz"
    ase.io.write(short, [labelled("Si", -1.0)])
    no_ge = tmp_path / "no_ge.extxyz"
    ase.io.write(no_ge, [labelled("Si", -1.0), labelled("SiGe", -3.0)])
    cases = [
        (["hull", str(unlabelled), "--energies-from", "labels"], "unlabelled.extxyz, frame 1, field 'energy'"),
        (["hull", str(tmp_path / "nope.extxyz"), "--energies-from", "labels"], "nope.extxyz: file does not exist"),
        (["hull", str(good), "--energies-from", "model", "--model", "toy-lj", "--fidelity", "mid"],
         "unknown fidelity 'mid'"),
        (["hull", str(good), "--energies-from", "model"], "--energies-from model needs --model"),
        (["hull", str(mixed), "--energies-from", "labels"], "several fidelities (pbe, r2scan)"),
        (["hull", str(mixed), "--energies-from", "labels", "--fidelity", "ccsd"], "no frame of fidelity 'ccsd'"),
        (["hull", str(no_ge), "--energies-from", "labels"], "no elemental structure of Ge"),
        (["hull", str(good), "--energies-from", "labels", "--reference", str(short)], "same structures"),
        (["hull", str(good), "--energies-from", "labels", "--out", str(tmp_path / "t.txt")], "must end in .csv"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)


def test_entries_from_atoms_counts_elements():
    (entry,) = entries_from_atoms([ase.build.bulk("SiGe", "zincblende", a=5.5) * (2, 1, 1)], [-3.0], ["x"])
    assert dict(entry.composition) == {"Si": 2, "Ge": 2} and entry.energy == -3.0


def test_cli_relax_then_hull(tmp_path, capsys):
    si_ge = ase.build.bulk("Si", "fcc", a=3.5) * (2, 1, 1)
    si_ge.symbols[1] = "Ge"
    frames = [ase.build.bulk("Si", "fcc", a=3.3), ase.build.bulk("Ge", "fcc", a=3.45), si_ge]
    ase.io.write(tmp_path / "s.extxyz", frames)
    relaxed_out, out = tmp_path / "relaxed.extxyz", tmp_path / "hull.json"
    argv = ["hull", str(tmp_path / "s.extxyz"), "--energies-from", "model", "--model", "toy-lj", "--fidelity",
            "high", "--relax", "--relax-set", "fmax=0.001", "--relaxed-out", str(relaxed_out), "--out", str(out)]
    assert cli.main(argv) == 0
    assert "relaxed: 3 of 3 converged" in capsys.readouterr().out
    relaxed = ase.io.read(relaxed_out, ":")
    rows = json.loads(out.read_text())["rows"]
    np.testing.assert_allclose([r["energy"] for r in rows], [a.get_potential_energy() for a in relaxed])
    assert all(a.info["relax_converged"] for a in relaxed)
    # one LJ potential for every element: every relaxed fcc cell has the same energy per atom, all on the hull
    np.testing.assert_allclose([r["energy_per_atom"] for r in rows], rows[0]["energy_per_atom"], rtol=1e-4)
    assert all(r["e_above_hull"] < 1e-4 for r in rows)
    assert cli.main(argv[:-4] + ["--relax-set", "fmx=1"]) == 2
    assert "did you mean 'fmax'" in capsys.readouterr().err
