"""The benchmark harness runs end to end on tiny inputs (mfjax side only, no sevenn/torch).

Not a timing test: it checks that ``benchmarks/run.py`` still fits the library's APIs and writes
the JSON keys the issue asks for, with the one-compilation properties the table reports.
"""

from __future__ import annotations

import json

import pytest

run = pytest.importorskip("benchmarks.run")


def test_smoke_profile_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run.main(["--profile", "smoke", "--no-sevenn", "--only", "inference,training", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sevenn columns skipped" in printed
    assert "| figure | mfjax | sevenn | mfjax/sevenn |" in printed
    data = json.loads(out.read_text())
    for key in ("ratio_inference", "ratio_training", "ratio_md", "machine", "inference", "training", "targets"):
        assert key in data
    assert data["ratio_inference"] is None  # no sevenn: no ratio, never a made-up number
    row = data["inference"]["sizes"]["8"]
    assert row["mfjax_ase_atom_steps_per_s"] > 0 and row["mfjax_jit_atom_steps_per_s"] > 0
    assert row["mfjax_calculator_compilations"] == 1  # repeated ASE calls reuse one executable
    train = data["training"]["presets"]["small"]
    assert train["mfjax_structures_per_s"] > 0
    assert train["mfjax_compilations"] == 1 and train["mfjax_executables"] == 1
    assert data["targets"]["one_compilation_per_training_run"]["met"] is True
