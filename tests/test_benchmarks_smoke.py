"""The benchmark harness runs end to end on tiny inputs (mfjax side only, no sevenn/torch).

Not a timing test: it checks that ``benchmarks/run.py`` still fits the library's APIs and writes
the JSON keys the issue asks for; repeated ASE calls reuse one compiled executable. (Training and
MD sections compile more and would not fit the smoke budget; ``--profile smoke`` runs them too.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root holds benchmarks/

from benchmarks import run  # noqa: E402


def test_smoke_profile_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run.main(["--profile", "smoke", "--no-sevenn", "--only", "inference", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sevenn columns skipped" in printed
    assert "| figure | mfjax | sevenn | mfjax/sevenn |" in printed
    data = json.loads(out.read_text())
    for key in ("ratio_inference", "ratio_training", "ratio_md", "machine", "inference", "targets"):
        assert key in data
    assert data["ratio_inference"] is None  # no sevenn: no ratio, never a made-up number
    row = data["inference"]["sizes"]["8"]
    assert row["mfjax_ase_atom_steps_per_s"] > 0 and row["mfjax_jit_atom_steps_per_s"] > 0
    assert row["mfjax_calculator_compilations"] == 1  # repeated ASE calls reuse one executable
    flops = data["inference"]["flops"]  # XLA's FLOPs of the timed call over its time, vs a matmul
    assert 0 < flops["split"]["dot_flops"] < flops["flops"]  # radial MLPs are dots, tensor products not
    assert flops["achieved_gflops"] == pytest.approx(flops["flops"] / flops["seconds_per_call"] / 1e9)
    assert flops["fraction_of_peak"] == pytest.approx(flops["achieved_gflops"] / flops["peak"]["gflops"])
    assert data["flops_fraction_of_peak"] == flops["fraction_of_peak"] > 0
    assert "achieved GFLOP/s, peak GFLOP/s" in printed


def test_smoke_batched_section_one_compilation_per_bucket(tmp_path, capsys):
    """Many small structures through ``Model.predict(list, batch_size)`` (molecules only in the
    smoke profile: one compilation), one compilation per padded bucket, the rows in the table."""
    out = tmp_path / "bench.json"
    assert run.main(["--profile", "smoke", "--no-sevenn", "--only", "batched", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "many small: 4 x 9-atom ethanol molecules, batch 2 (structures/s)" in printed
    data = json.loads(out.read_text())
    assert list(data["batched"]["sets"]) == ["molecules"]
    for kind in ("molecules",):
        row = data["batched"]["sets"][kind]
        assert row["batches"] == 2 and row["mfjax_buckets"] == 1  # two equal chunks: one padded shape
        assert row["real_edges"] == 4 * 72 and row["padded_edges"] == 2 * 256  # ethanol: all 9 x 8 pairs within 5 Å
        assert row["mfjax_compilations"] == 1  # the timed passes reused the first pass's executable
        assert row["mfjax_structures_per_s"] > 0 and row.get("ratio") is None  # no sevenn: no ratio
        assert data["targets"][f"one_compilation_per_bucket_{kind}"]["met"] is True
