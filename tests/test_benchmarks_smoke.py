"""The benchmark harness runs end to end on tiny inputs (mfjax side only, no sevenn/torch).

Not a timing test: it checks that ``benchmarks/run.py`` still fits the library's APIs and writes
the JSON keys the issue asks for; repeated ASE calls reuse one compiled executable. (Training and
MD sections compile more and would not fit the smoke budget; ``--profile smoke`` runs them too.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
