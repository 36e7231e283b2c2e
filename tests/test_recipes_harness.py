"""experiments/recipes/run_recipes.py end to end on the synthetic two-fidelity set (two variants,
one seed, a few steps): rows per variant and region, aligned per-structure npz files, the report,
and one-line errors for bad settings."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.synthetic import write_synthetic_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "recipes" / "run_recipes.py"


def _harness():
    spec = importlib.util.spec_from_file_location("run_recipes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(tmp_path, **recipes) -> Path:
    base = write_synthetic_dataset(tmp_path / "data")
    base.pop("output")
    base["train"]["loss"].pop("fidelity_weights")
    settings = {"low": "lo", "high": "hi", "hf_fraction": 0.5, "seeds": [0], "steps": 3,
                "eval_every_steps": 3, "region_key": "region", "covered": "covered",
                "variants": {"plain": [], "scale": ["model.fidelity_scale=true"]}}
    settings.update(recipes)
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump({"base": base, "recipes": settings}))
    return path


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    harness = _harness()
    assert harness.main([str(_config(tmp_path, hf_fraction=1.5)), "--output", str(tmp_path / "out")]) == 2
    assert "hf_fraction" in capsys.readouterr().err
    assert harness.main([str(_config(tmp_path)), "--variants", "nope", "--output", str(tmp_path / "out")]) == 2
    assert "--variants: unknown ['nope']" in capsys.readouterr().err


@pytest.mark.slow
def test_two_variants_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert _harness().main([str(_config(tmp_path)), "--output", str(out)]) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["variant"], r["region"]) for r in rows] == [("plain", "covered"), ("scale", "covered")]
    assert all(int(r["steps"]) == 3 and float(r["forces_mae_mev_a"]) > 0 for r in rows)
    assert int(rows[1]["n_params"]) == int(rows[0]["n_params"]) + 2  # the [F, 1] scale
    plain, scale = (np.load(out / "errors" / f"{v}_seed0.npz") for v in ("plain", "scale"))
    assert list(plain["covered_structure_id"]) == list(scale["covered_structure_id"])
    n = len(plain["covered_structure_id"])
    assert n == int(rows[0]["n_test"]) and plain["covered_forces_mae"].shape == (n,)
    weighted = plain["covered_forces_mae"] @ plain["covered_forces_weight"] / plain["covered_forces_weight"].sum()
    assert weighted == pytest.approx(float(rows[0]["forces_mae_mev_a"]), rel=1e-4)  # = evaluate's component MAE
    report = (out / "results.md").read_text()
    assert "| plain |" in report and "reference" in report and "| scale |" in report
