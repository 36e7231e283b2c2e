"""Execute every notebook in notebooks/ top to bottom (nbclient, kernel python3).

Notebooks that take longer than ~60 s on a 2-core CPU are marked slow (run them with
``pytest -m slow tests/test_notebooks.py``); the rest run in the default suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SLOW = {"01_quickstart.ipynb", "03_differentiable_simulation.ipynb"}  # > 60 s on 2 CPU cores
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
