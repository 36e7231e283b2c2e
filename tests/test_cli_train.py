"""`mfjax train / evaluate / template` end to end on a tiny synthetic two-fidelity dataset."""

from __future__ import annotations

import csv
import json

import yaml
from helpers.synthetic import write_synthetic_dataset

from mfjax.cli import main
from mfjax.config import load_config
from mfjax.training.metrics import METRIC_KEYS


def test_train_then_evaluate(tmp_path, capsys):
    raw = write_synthetic_dataset(tmp_path / "data")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    rc = main(["train", str(cfg_path), "--set", "train.epochs=2", "--set", f"output.dir={run}", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    # data accounting, per-epoch validation tables, the final test table
    assert "Data accounting" in out and "lo.extxyz" in out and "total" in out
    assert "fidelities (index order, from the order first seen in the data files): lo, hi" in out
    assert "best weights: lowest validation forces_rmse_ev_a of 'hi' (fewest training frames" in out
    assert out.count("validation, epoch") == 2 and "test (best model" in out
    assert json.loads((run / "data_report.json").read_text())["frames_read"] == 52
    for name in ("config.yaml", "data_fingerprint.json", "data_report.json", "metrics.csv", "steps.csv", "test_metrics.json",
                 "train.log"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["parity_hi.png", "parity_lo.png"]
    assert (run / "plots" / "parity_lo.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (run / "model").iterdir()) == ["model.json", "variables.msgpack"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["valid_hi_forces_rmse_ev_a"] != ""
    test = json.loads((run / "test_metrics.json").read_text())
    assert set(test) == {"lo", "hi"} and set(test["lo"]) == set(METRIC_KEYS)
    assert load_config(run / "config.yaml").train.epochs == 2  # resolved config saved
    manifest = json.loads((run / "model" / "model.json").read_text())
    assert manifest["fidelities"] == ["lo", "hi"] and manifest["training"]["epochs"] == 2

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(run / "model"), str(tmp_path / "data" / "hi.extxyz"), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert list(metrics) == ["hi"]
    assert set(metrics["hi"]) == {"n_structures", "energy_mae_mev_atom", "energy_rmse_mev_atom", "forces_mae_ev_a",
                                  "forces_rmse_ev_a", "stress_mae_gpa"}
    assert metrics["hi"]["n_structures"] == 12
    # --fidelity overrides the frames' own; an unknown name is a one-line error (exit 2)
    assert main(["evaluate", str(run / "model"), str(tmp_path / "data" / "hi.extxyz"), "--fidelity", "lo"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), str(tmp_path / "data" / "hi.extxyz"), "--fidelity", "x"]) == 2
    assert "unknown fidelity 'x'" in capsys.readouterr().err


def test_fidelity_order_and_best_fidelity_from_the_config(tmp_path, capsys):
    raw = write_synthetic_dataset(tmp_path / "data")
    raw["data"]["fidelities"] = ["hi", "lo"]
    raw["train"].update(epochs=1, best_fidelity="lo", eval_every_steps=3)
    raw["output"]["plots"] = False
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(cfg_path), "--output", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fidelities (index order, from data.fidelities): hi, lo" in out
    assert "best weights: lowest validation forces_rmse_ev_a of 'lo' (train.best_fidelity)" in out
    assert "validation, step 3" in out and "validation, epoch 1" in out  # eval_every_steps and the epoch end
    manifest = json.loads((run / "model" / "model.json").read_text())
    assert manifest["fidelities"] == ["hi", "lo"] and manifest["training"]["best_fidelity"] == "lo"
    cfg_path.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "best_fidelity": "ccsd"}}))
    assert main(["train", str(cfg_path), "--output", str(tmp_path / "bad")]) == 2
    assert "train.best_fidelity 'ccsd'" in capsys.readouterr().err


def test_template_is_a_loadable_config(tmp_path, capsys):
    assert main(["template"]) == 0
    text = capsys.readouterr().out
    assert "checkpoint_every_steps" in text and "fidelity_weights" in text
    data = yaml.safe_load(text)
    data["data"]["datasets"] = [{"path": "x.extxyz"}]
    cfg = load_config(data=data)
    assert cfg.train.loss.delta == 0.01 and cfg.train.loss.stress_weight == 0.01


def test_bad_config_key_is_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {datasets: [{path: x.extxyz}]}\ntrain: {epoch: 3}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "epochs" in err and "Traceback" not in err
