"""Safe resume (``mfjax.training.runstate``): ``mfjax train`` and ``mfjax ablate`` refuse changed data,
split, model and loss on ``--resume`` with one line naming the keys, record allowed changes, never
overwrite the stored config, need ``--resume``/``--overwrite`` for a directory that holds a run,
and turn unreadable checkpoints and removed data files into one line (exit code 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase.io
import pytest
import yaml
from helpers.synthetic import synthetic_config, write_synthetic_dataset

from mfjax.cli import main


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, captured.out[-2000:] + err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run: (config path, run dir). Tests copy the run dir before changing it."""
    root = tmp_path_factory.mktemp("safe")
    raw = write_synthetic_dataset(root / "data", n_low=16, n_high=8)
    raw["train"].update(epochs=1, checkpoint_every_steps=0)
    raw["train"]["batch"]["max_graphs"] = 8
    raw["output"].update(plots=False, progress=False)
    config = root / "cfg.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = root / "run"
    assert main(["train", str(config), "--output", str(run)]) == 0
    return config, run


def _copy(finished, tmp_path) -> tuple[Path, Path]:
    config, run = finished
    shutil.copytree(run, tmp_path / "run")
    return config, tmp_path / "run"


@pytest.mark.parametrize("overrides, needles", [
    (["data.split.seed=1"], ["data.split.seed (0 -> 1)", "data.split_assignment"]),
    (["model.num_layers=2"], ["model.num_layers (1 -> 2)"]),
    (["data.cutoff=3.5"], ["data.cutoff (4.0 -> 3.5)", "model.cutoff (4.0 -> 3.5)"]),
    (["data.fidelities=[hi,lo]"], ["data.fidelities (null -> [\"hi\", \"lo\"])"]),
    (["train.loss.energy_weight=2.0", "train.lr=0.001"], ["train.loss.energy_weight (1.0 -> 2.0)", "train.lr (0.01 -> 0.001)",
                                                          "train.lr may change with --allow-config-change (the others not)"]),
])
def test_resume_refuses_changed_data_split_model_loss(finished, tmp_path, capsys, overrides, needles):
    config, run = _copy(finished, tmp_path)
    stored = (run / "config.yaml").read_bytes()
    args = ["train", str(config), "--output", str(run), "--resume"] + [a for o in overrides for a in ("--set", o)]
    err = _one_line_error(capsys, main(args), "--resume: refused", "start a new run (--output) or pass --overwrite", *needles)
    assert "train.epochs" not in err
    assert (run / "config.yaml").read_bytes() == stored and not (run / "resume_log.jsonl").exists()
    # --allow-config-change does not let data/model/loss changes through
    _one_line_error(capsys, main(args + ["--allow-config-change"]), "--resume: refused", needles[0])


def test_resume_refuses_changed_labels_and_a_removed_file(finished, tmp_path, capsys):
    config, run = _copy(finished, tmp_path)
    hi = Path(yaml.safe_load(config.read_text())["data"]["datasets"][1]["path"])
    backup = hi.read_bytes()
    try:
        frames = ase.io.read(hi, ":")
        frames[3].calc.results["energy"] += 0.01  # one label of one frame
        ase.io.write(hi, frames)
        _one_line_error(capsys, main(["train", str(config), "--output", str(run), "--resume"]),
                        f"data.frames[{hi}] (8 frames, blake2b")
        hi.unlink()
        _one_line_error(capsys, main(["train", str(config), "--output", str(run), "--resume"]),
                        str(hi), "does not exist")
    finally:
        hi.write_bytes(backup)


def test_resume_with_more_epochs_and_allowed_lr_change_is_logged(finished, tmp_path, capsys):
    config, run = _copy(finished, tmp_path)
    stored = (run / "config.yaml").read_bytes()
    base = ["train", str(config), "--output", str(run), "--resume", "--set", "train.epochs=2"]
    _one_line_error(capsys, main(base + ["--set", "train.lr=0.005"]), "train.lr (0.01 -> 0.005)",
                    "--allow-config-change")
    assert main(base + ["--set", "train.lr=0.005", "--allow-config-change", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "--resume with changed settings (recorded in resume_log.jsonl)" in out and "train.epochs (1 -> 2)" in out
    assert (run / "config.yaml").read_bytes() == stored  # the original config is never overwritten
    entries = [json.loads(line) for line in (run / "resume_log.jsonl").read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["allow_config_change"] is True
    assert entries[0]["changed"] == {"train.epochs": [1, 2], "train.lr": [0.01, 0.005],
                                     "output.dir": [str(finished[1]), str(run)]}  # a moved run directory, too
    epochs = {line.split(",")[1] for line in (run / "steps.csv").read_text().splitlines()[1:]}
    assert epochs == {"0", "1"}  # the second epoch was trained
    # a second resume appends (the log is append-only)
    assert main(base + ["--set", "train.lr=0.005", "--allow-config-change"]) == 0
    assert len((run / "resume_log.jsonl").read_text().splitlines()) == 2


def test_start_into_a_run_directory_needs_resume_or_overwrite(finished, tmp_path, capsys):
    config, run = _copy(finished, tmp_path)
    (run / "notes.txt").write_text("mine")
    _one_line_error(capsys, main(["train", str(config), "--output", str(run)]), str(run), "already holds a run",
                    "--resume", "--overwrite")
    assert main(["train", str(config), "--output", str(run), "--overwrite", "--set", "data.split.seed=1"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split"]["seed"] == 1
    assert not (run / "resume_log.jsonl").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / "train.log").read_text().count("Data accounting") == 1  # the old log went with the old run


def test_bad_config_leaves_no_run_directory(finished, tmp_path, capsys):
    config, _ = finished
    run = tmp_path / "bad"
    _one_line_error(capsys, main(["train", str(config), "--output", str(run), "--set", "train.best_fidelity=ccsd"]),
                    "ccsd")
    assert not run.exists()


def test_corrupt_or_mismatched_checkpoint_is_one_line(finished, tmp_path, capsys):
    config, run = _copy(finished, tmp_path)
    # an older run directory without a stored config: the checkpoint of another model size
    (run / "config.yaml").unlink()
    (run / "data_fingerprint.json").unlink()
    _one_line_error(capsys, main(["train", str(config), "--output", str(run), "--resume", "--set", "model.num_layers=2"]),
                    str(run), "cannot be restored", "--overwrite")
    assert not (run / "config.yaml").exists()  # a failed resume stores nothing
    shutil.rmtree(run)
    config, run = _copy(finished, tmp_path)
    for path in (run / "checkpoints" / "last").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\0garbage")
    _one_line_error(capsys, main(["train", str(config), "--output", str(run), "--resume"]), str(run),
                    "cannot be restored", "--overwrite")


def test_ablate_refuses_overwriting_results_and_changed_budgets(tmp_path, capsys):
    raw = synthetic_config(tmp_path / "data", strategies=["hf_only"], hf_fractions=[1.0],
                           budget={"total_steps": 3, "pretrain_steps": 2})
    raw["ablation"]["export"] = False
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    args = ["ablate", str(config), "--output", str(out)]
    assert main(args) == 0
    results = (out / "results.csv").read_bytes()
    assert yaml.safe_load((out / "config.yaml").read_text())["ablation"]["budget"]["total_steps"] == 3
    capsys.readouterr()
    _one_line_error(capsys, main(args), str(out), "results.csv", "--resume", "--overwrite")
    _one_line_error(capsys, main(args + ["--resume", "--set", "ablation.budget.total_steps=4"]),
                    "ablation.budget.total_steps (3 -> 4)")
    _one_line_error(capsys, main(args + ["--resume", "--set", "data.split.seed=1"]), "data.split.seed (0 -> 1)",
                    "data.split_assignment")
    _one_line_error(capsys, main(args + ["--resume", "--set", "train.lr=0.001"]), "train.lr (0.01 -> 0.001)")
    assert (out / "results.csv").read_bytes() == results
    # more seeds or strategies, and logging, may change: recorded
    assert main(args + ["--resume", "--set", "train.checkpoint_every_steps=7"]) == 0
    assert "skipped" in capsys.readouterr().out
    entry = json.loads((out / "resume_log.jsonl").read_text())
    assert entry["changed"] == {"train.checkpoint_every_steps": [100, 7]}
    assert main(args + ["--overwrite", "--set", "ablation.budget.total_steps=4"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["ablation"]["budget"]["total_steps"] == 4
    assert not (out / "resume_log.jsonl").exists()
