"""Named HF test regions, a ``role: test`` HF file, per-structure error files and the paired
statistics of ``mfjax ablate`` (end to end on tiny synthetic data), and the report without forces."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from helpers.synthetic import synthetic_config, synthetic_frames

from mfjax.cli import main
from mfjax.strategies import paired, report
from mfjax.strategies.data import prepare_data, species_covering_order
from mfjax.strategies.errors import load_errors, save_errors
from mfjax.strategies.settings import load_ablation_config
from mfjax.utils.configtools import ConfigError

REGIONS = {"uncovered_temperature": {"key": "region", "value": "uncovered"}, "composition_gap": {"value": "gap"}}


def _config(tmp_path: Path, **ablation) -> dict:
    """The synthetic ablation plus an HF test file (``role: test``): 10 covered frames and 6 of a
    "gap" region that has no HF training data."""
    raw = synthetic_config(tmp_path / "data", **{"regions": REGIONS, **ablation})
    frames = synthetic_frames(16, "high", seed=7, temperatures=(100.0, 300.0))
    for k, atoms in enumerate(frames):
        atoms.info["region"] = "gap" if k >= 10 else "covered"
    ase.io.write(tmp_path / "data" / "high_test.extxyz", frames)
    raw["data"]["datasets"].append({"path": str(tmp_path / "data" / "high_test.extxyz"), "role": "test"})
    return raw


def test_regions_are_test_only_and_the_test_file_joins_the_covered_test(tmp_path):
    raw = _config(tmp_path)
    cfg, settings = load_ablation_config(None, data=raw)
    d = prepare_data(cfg, settings)
    assert set(d.test_sets()) == {"test", "uncovered_temperature", "composition_gap"}
    from_file = [s for s in d.hf_test if s.structure_id.startswith("syn-7-")]
    assert len(from_file) == 10 and len(d.hf_test) > 10  # the covered test split + the file's covered frames
    assert {s.structure_id for s in d.hf_regions["composition_gap"]} == {f"syn-7-{k}" for k in range(10, 16)}
    assert d.hf_regions["uncovered_temperature"]
    assert all(s.info["region"] == "uncovered" for s in d.hf_regions["uncovered_temperature"])
    trained = d.hf_pool + d.hf_valid + d.hf_test
    assert all(s.info["region"] == "covered" for s in trained)
    assert any(s.info["region"] == "uncovered" for s in d.lf_train)  # the LF data covers the regions
    assert "composition_gap 6" in d.summary()


def test_hf_subsets_cover_every_element_from_a_few_frames_on(tmp_path):
    ids = [[6, 1], [6, 1, 8], [6, 1, 8], [6, 1, 7], [6, 1]]  # ethylene-, methanol-, methylamine-like
    frames = [type("S", (), {"species": np.array(z)})() for z in ids]
    order = species_covering_order(frames, [0, 4, 2, 1, 3])
    assert order[:2] == [2, 3] and sorted(order) == [0, 1, 2, 3, 4] and order[2:] == [0, 4, 1]
    cfg, settings = load_ablation_config(None, data=_config(tmp_path))
    d = prepare_data(cfg, settings)
    pool_elements = {int(z) for s in d.hf_pool for z in s.species}
    for seed in range(4):
        small = d.hf_subset(0.01, seed)  # n_hf = 1: whatever the permutation's best single frame holds
        few = d.hf_subset(3 / len(d.hf_pool), seed)
        assert {int(z) for s in few for z in s.species} == pool_elements
        assert small[0] is few[0] and [id(s) for s in few] == [id(s) for s in d.hf_subset(1.0, seed)[:3]]


def test_old_uncovered_keys_load_as_one_region_and_bad_regions_are_one_line(tmp_path):
    raw = synthetic_config(tmp_path / "data", uncovered_key="region", uncovered_value="uncovered")
    _, settings = load_ablation_config(None, data=raw)
    assert {k: (r.key, r.value) for k, r in settings.regions.items()} == {"uncovered": ("region", "uncovered")}
    _, default = load_ablation_config(None, data=synthetic_config(tmp_path / "data"))
    assert list(default.regions) == ["uncovered"] and default.seeds == 1  # the helper's seeds
    raw["ablation"]["regions"] = REGIONS
    with pytest.raises(ConfigError, match="give only ablation.regions"):
        load_ablation_config(None, data=raw)
    for bad in ({"test": {"value": "x"}}, {"a-b": {"value": "x"}}):
        with pytest.raises(ConfigError, match="region names"):
            load_ablation_config(None, data=synthetic_config(tmp_path / "data", regions=bad))
    with pytest.raises(ConfigError, match="unknown config key 'ablation.regions.gap.vlaue'"):
        load_ablation_config(None, data=synthetic_config(tmp_path / "data", regions={"gap": {"vlaue": "gap"}}))


@pytest.mark.slow
def test_ablate_saves_errors_and_reports_paired_differences_per_region(tmp_path, capsys):
    raw = _config(tmp_path, strategies=["hf_only", "multi_fidelity", "append"], hf_fractions=[1.0], seeds=2,
                  bootstrap={"samples": 300, "seed": 1}, export=False)
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert main(["ablate", str(config), "--output", str(out)]) == 0
    with open(out / "results.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["strategy"] != "lf_model"]
    assert len(rows) == 6
    for r in rows:
        errors = load_errors(out / "errors" / f"{r['strategy']}_f1_s{r['seed']}.npz")
        assert set(errors) == {"test", "uncovered_temperature", "composition_gap"}
        for region, prefix in (("test", "hf_test"), ("composition_gap", "hf_composition_gap")):
            e = errors[region]
            assert len(e["structure_id"]) == int(r[f"{prefix}_n_structures"])
            # the per-structure errors reproduce the row's metrics (evaluate rounds the ~kEV reference
            # energies to float32: ~0.1 meV/atom)
            force = np.sum(e["forces_mae_ev_a"] * e["forces_count"]) / np.sum(e["forces_count"])
            np.testing.assert_allclose(force, float(r[f"{prefix}_forces_mae_ev_a"]), rtol=1e-3)
            np.testing.assert_allclose(np.mean(np.abs(e["energy_error_mev_atom"])),
                                       float(r[f"{prefix}_energy_mae_mev_atom"]), atol=0.1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["regions"]["composition_gap"] == 6
    pairs = {(c["region"], c["metric"], c["a"], c["b_label"]) for c in summary["paired"]}
    for region in ("test", "uncovered_temperature", "composition_gap"):
        for metric in ("forces_mae", "energy_mae"):
            assert (region, metric, "multi_fidelity", "hf_only") in pairs
            assert (region, metric, "multi_fidelity", "append") in pairs
            assert (region, metric, "append", "best single-fidelity (hf_only)") in pairs
    for c in summary["paired"]:
        assert c["ci_low"] <= c["difference"] <= c["ci_high"] and c["n_seeds"] == 2
        assert c["verdict"] in {f"{c['a']} better", f"{c['a']} worse", "tie"}
        assert (c["verdict"] == "tie") == (c["ci_low"] <= 0.0 <= c["ci_high"])
    table = (out / "results.md").read_text()
    assert "## Paired differences" in table and "region composition_gap" in table
    assert "| 16 (1) | multi_fidelity − hf_only |" in table or "multi_fidelity − hf_only" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000
    # a rerun with --overwrite removes the old error files with the rest
    (out / "errors" / "stale_f1_s9.npz").write_bytes(b"")
    assert main(["ablate", str(config), "--output", str(out), "--overwrite", "--strategies", "hf_only",
                 "--seeds", "1"]) == 0
    assert sorted(p.name for p in (out / "errors").iterdir()) == ["hf_only_f1_s0.npz"]


def _fake_errors(n: int, shift: dict[str, float], forces: bool, rng) -> dict:
    """{(strategy, fraction, seed): {region: fields}} with per-strategy error shifts."""
    out = {}
    for name, delta in shift.items():
        for seed in (0, 1, 2):
            base = np.abs(rng.normal(20.0, 5.0, n))
            fields = {"structure_id": np.array([f"s{k}" for k in range(n)]), "n_atoms": np.full(n, 4),
                      "energy_error_mev_atom": base + delta,
                      "forces_mae_ev_a": (base + delta) / 1000.0 if forces else np.full(n, np.nan),
                      "forces_count": np.full(n, 12 if forces else 0)}
            out[(name, 0.1, seed)] = {"test": fields}
    return out


def test_paired_comparisons_resolve_a_shift_and_cope_without_forces(tmp_path):
    rng = np.random.default_rng(0)
    shift = {"hf_only": 30.0, "transfer": 5.0, "delta": 0.0, "multi_fidelity": 0.0, "append": -10.0}
    errors = _fake_errors(200, shift, forces=True, rng=rng)
    found = paired.comparisons(errors, ["test"], {0.1: 7}, samples=500, seed=0, order=list(shift))
    by = {(c["metric"], c["a"], c["b_label"]): c for c in found}
    assert by[("forces_mae", "multi_fidelity", "hf_only")]["verdict"] == "multi_fidelity better"
    assert by[("forces_mae", "multi_fidelity", "append")]["verdict"] == "multi_fidelity worse"
    tie = by[("energy_mae", "multi_fidelity", "delta")]
    assert tie["verdict"] == "tie" or abs(tie["difference"]) < tie["ci_high"] - tie["ci_low"]
    best = by[("forces_mae", "append", "best single-fidelity (delta)")]  # delta is the best single-fidelity run
    assert best["verdict"] == "append better" and best["b"] == "delta"
    np.testing.assert_allclose(by[("forces_mae", "multi_fidelity", "hf_only")]["difference"],
                               np.mean([e["test"]["forces_mae_ev_a"].mean() for k, e in errors.items() if k[0] == "multi_fidelity"]) * 1000
                               - np.mean([e["test"]["forces_mae_ev_a"].mean() for k, e in errors.items() if k[0] == "hf_only"]) * 1000)
    # energies only at the high fidelity (CCSD(T)): no force entries, "–" cells, no force panels
    energy_only = _fake_errors(50, shift, forces=False, rng=rng)
    for key, value in energy_only.items():
        save_errors(tmp_path / "errors" / f"{key[0]}_f0.1_s{key[2]}.npz", value)
    rows = [{"strategy": k[0], "hf_fraction": 0.1, "seed": k[2], "n_hf_train": 7,
             "hf_test_energy_mae_mev_atom": float(np.abs(v["test"]["energy_error_mev_atom"]).mean()),
             "hf_test_forces_mae_ev_a": None} for k, v in energy_only.items()]
    loaded = paired.load_run_errors(tmp_path / "errors", rows)
    found = paired.comparisons(loaded, ["test"], {0.1: 7}, samples=300, seed=0)
    assert found and {c["metric"] for c in found} == {"energy_mae"}
    text = report.markdown(rows, list(shift), ["test"], found)
    assert "force MAE, meV/Å**" not in text.split("## Paired")[0] and "energy MAE" in text
    assert "| 7 (0.1) | multi_fidelity − hf_only | – | – |" in text
    bands = {("test", "energy_mae"): paired.curve_intervals(loaded, "test", "energy_mae", samples=200)}
    assert bands[("test", "energy_mae")]["hf_only"][0.1].n_seeds == 3
    report.plot(rows, list(shift), tmp_path / "curves.png", regions=["test"], bands=bands)
    assert (tmp_path / "curves.png").stat().st_size > 5_000
    csv_path = tmp_path / "results.csv"
    report.write_csv(csv_path, [{**rows[0], "extra_stat": 3}])
    assert report.read_csv(csv_path)[0]["extra_stat"] == 3 and report.columns(rows)[-1] == "notes"


@pytest.mark.slow
def test_shipped_quick_covers_every_region_and_the_statistics_in_under_five_minutes(tmp_path):
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "ablation" / "config.yaml"
    cfg, settings = load_ablation_config(experiment, quick=True)
    if not all(Path(d.path).exists() for d in cfg.data.datasets):
        pytest.skip("the shipped dataset is not there yet")
    assert len(settings.hf_fractions) == 2 and settings.seeds == 2 and len(settings.regions) == 2
    t0 = time.perf_counter()
    assert main(["ablate", str(experiment), "--quick", "--output", str(tmp_path / "quick")]) == 0
    assert time.perf_counter() - t0 < 300
    summary = json.loads((tmp_path / "quick" / "summary.json").read_text())
    assert {c["region"] for c in summary["paired"]} == {"test", *settings.regions}
    assert {c["hf_fraction"] for c in summary["paired"]} == set(settings.hf_fractions)
    assert len(list((tmp_path / "quick" / "errors").glob("*.npz"))) == 2 * 2 * len(settings.strategies)


def test_shipped_configs_name_the_regions_and_the_ccsdt_one_selects_on_energies():
    root = Path(__file__).resolve().parents[1] / "experiments" / "ablation"
    cfg, settings = load_ablation_config(root / "config.yaml")
    assert settings.hf_fractions == (0.01, 0.03, 0.1, 0.3, 1.0) and settings.seeds == 3
    assert {k: r.value for k, r in settings.regions.items()} == {"uncovered_temperature": "uncovered",
                                                                "composition_gap": "gap"}
    assert [d.role for d in cfg.data.datasets if d.path.endswith("organics_r2scan_test.extxyz")] == ["test"]
    cfg, settings = load_ablation_config(root / "config_ccsdt.yaml", quick=True)
    assert (settings.low, settings.high, cfg.train.best_metric) == ("pbe", "ccsdt", "energy_rmse_mev_atom")
    assert list(settings.regions) == ["uncovered_temperature"] and settings.seeds == 2
