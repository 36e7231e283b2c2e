"""Execute every notebook in notebooks/ top to bottom (nbclient, kernel python3).

All notebooks run in the default suite (CI): 01 trains a small model for two epochs (~100 s on 2 CPU
cores), 02 runs 2000 steps of jax-md NVT (~35 s), 03 differentiates through a trajectory (~150 s).
A notebook listed in SLOW would run only with ``pytest -m slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SLOW: set[str] = set()
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in NOTEBOOKS],
)
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    env_backend = os.environ.setdefault("MPLBACKEND", "Agg")
    assert env_backend
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
