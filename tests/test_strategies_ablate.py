"""``mfjax ablate``: the command end to end on tiny synthetic data (fast), its outputs, resume and
option errors; and the shipped experiment's ``--quick`` run (slow)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import yaml
from helpers.synthetic import synthetic_config

import mfjax.training.fit as fit_module
from mfjax.cli import main
from mfjax.strategies.settings import load_ablation_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "ablation" / "config.yaml"


def _config(tmp_path: Path) -> Path:
    raw = synthetic_config(tmp_path / "data", strategies=["hf_only", "delta", "append"], hf_fractions=[0.5, 1.0])
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_ablate_cli_writes_csv_table_plot_and_resumes(tmp_path, capsys):
    config = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["ablate", str(config), "--output", str(out), "--strategies", "hf_only,delta", "--seeds", "2"]) == 0
    text = capsys.readouterr().out
    assert "[run 1/8]" in text and "[run 8/8]" in text  # 2 strategies x 2 fractions x 2 seeds
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    runs = [r for r in rows if r["strategy"] != "lf_model"]
    assert {(r["strategy"], float(r["hf_fraction"]), int(r["seed"])) for r in runs} == {
        (s, f, k) for s in ("hf_only", "delta") for f in (0.5, 1.0) for k in (0, 1)}
    assert len([r for r in rows if r["strategy"] == "lf_model"]) == 2  # one shared LF model per seed
    for r in runs:
        assert float(r["hf_test_forces_mae_ev_a"]) > 0 and float(r["hf_uncovered_forces_mae_ev_a"]) > 0
        assert r["lf_test_forces_mae_ev_a"] == ""  # neither predicts the LF fidelity
        if r["strategy"] == "delta":
            assert "paired" in r["notes"]
    table = (out / "results.md").read_text()
    assert "| hf_only |" in table and "±" in table and "uncovered" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert (out / "runs" / "delta_f1_s0" / "model" / "model.json").exists()
    # resume: everything done, nothing retrained; a new bootstrap (reporting only) is accepted
    assert main(["ablate", str(config), "--output", str(out), "--strategies", "hf_only,delta", "--seeds", "2", "--resume",
                 "--set", "ablation.bootstrap.samples=300"]) == 0
    assert capsys.readouterr().out.count("skipped") == 8
    logged = [json.loads(line) for line in (out / "resume_log.jsonl").read_text().splitlines()]
    assert logged[-1]["changed"]["ablation.bootstrap.samples"] == [2000, 300]


def _rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return [{k: v for k, v in r.items() if k not in ("train_seconds", "compile_seconds")} for r in csv.DictReader(handle)]


def test_ablate_resume_continues_a_killed_stage(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path)
    args = ["ablate", str(config), "--strategies", "transfer", "--hf-fractions", "1.0",
            "--set", "train.checkpoint_every_steps=4"]
    assert main(args + ["--output", str(tmp_path / "ref")]) == 0
    real, count = fit_module.iterate_steps, [0]

    def dying(*a, **k):  # the process dies in step 6 of the fine-tuning (after the 10 LF steps)
        for step in real(*a, **k):
            count[0] += 1
            if count[0] == 16:
                raise RuntimeError("killed")
            yield step

    monkeypatch.setattr(fit_module, "iterate_steps", dying)
    with pytest.raises(RuntimeError, match="killed"):
        main(args + ["--output", str(tmp_path / "out")])
    stage = tmp_path / "out" / "stages" / "transfer_f1_s0" / "fine_tune" / "checkpoints" / "last"
    assert stage.is_dir() and (tmp_path / "out" / "stages" / "lf_model_s0" / "pretrain").is_dir()
    monkeypatch.setattr(fit_module, "iterate_steps", real)
    capsys.readouterr()
    assert main(args + ["--output", str(tmp_path / "out"), "--resume"]) == 0
    text = capsys.readouterr().out
    assert "global step 10 of 10" in text  # the finished LF model is restored, not retrained
    assert "global step 4 of 10" in text  # the fine-tuning continues from its step-4 checkpoint
    assert _rows(tmp_path / "out" / "results.csv") == _rows(tmp_path / "ref" / "results.csv")
    assert not (tmp_path / "out" / "stages" / "transfer_f1_s0").exists()  # removed once the row is written


def test_ablate_option_errors(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["ablate", str(config), "--strategies", "hf_only,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["ablate", str(config), "--hf-fractions", "0.1,x"]) == 2
    assert main(["ablate", str(config), "--hf-fractions", "1.5"]) == 2
    assert main(["ablate", str(tmp_path / "missing.yaml")]) == 2


def test_quick_overrides_and_explicit_options_win(tmp_path):
    config = _config(tmp_path)
    _, quick = load_ablation_config(config, quick=True)
    assert quick.budget.pretrain_steps == 40 and quick.hf_fractions == (0.3, 1.0)
    _, both = load_ablation_config(config, ["ablation.hf_fractions=[1.0]"], quick=True)
    assert both.hf_fractions == (1.0,)


def test_experiment_config_is_valid():
    if not EXPERIMENT.exists():
        pytest.skip("experiments/ablation/config.yaml not written yet")
    raw = yaml.safe_load(EXPERIMENT.read_text())
    assert set(raw["ablation"]["strategies"]) == {
        "hf_only", "transfer", "delta", "multi_fidelity", "multi_fidelity_heads", "append"}
    cfg, settings = load_ablation_config(EXPERIMENT, quick=True)
    assert settings.high == "r2scan" and settings.low == "pbe"


@pytest.mark.slow
def test_shipped_experiment_quick_under_ten_minutes(tmp_path):
    cfg, _ = load_ablation_config(EXPERIMENT)
    if not all(Path(d.path).exists() for d in cfg.data.datasets):
        pytest.skip("the shipped dataset is not there yet")
    t0 = time.perf_counter()
    assert main(["ablate", str(EXPERIMENT), "--quick", "--output", str(tmp_path / "quick")]) == 0
    assert time.perf_counter() - t0 < 600
    assert (tmp_path / "quick" / "results.md").exists()
