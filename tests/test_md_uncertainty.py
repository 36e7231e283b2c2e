"""MD with an ensemble: every saved frame carries the largest per-atom force std; frames above
``uncertainty_threshold`` are flagged (trajectory info, log column, result) and
``stop_on_uncertainty`` stops the run there; bad settings are one-line config errors."""

from __future__ import annotations

import ase.build
import ase.io
import numpy as np
import pytest
from helpers.models import random_potential_model

from mfjax.errors import ConfigError
from mfjax.md.config import MDConfig, load_md_config
from mfjax.md.simulate import run_md
from mfjax.model import Model

FAST = {"num_layers": 1, "hidden_irreps": "8x0e+4x1e", "lmax": 1, "radial_hidden": [8]}


@pytest.fixture(scope="module")
def ensemble():
    return Model.ensemble([random_potential_model(seed=s, scale=0.05, **FAST) for s in (0, 1, 2)])


def _cfg(tmp_path, **kw) -> MDConfig:
    base = dict(fidelity="pbe", engine="ase", ensemble="nvt", temperature=100.0, steps=6, interval=3, quiet=True,
                traj=str(tmp_path / "md.extxyz"), log=str(tmp_path / "md.log"), timestep=0.25, max_temperature_factor=1e6)
    return MDConfig(**{**base, **kw})


def test_frames_are_flagged_above_the_threshold(ensemble, tmp_path):
    atoms = ase.build.molecule("CH4")
    spread = float(np.max(ensemble.predict(atoms, "pbe")["forces_std"]))
    assert spread > 0
    result = run_md(ensemble, atoms, _cfg(tmp_path, uncertainty_threshold=1e-9))
    assert result.stable and result.steps_done == 6
    assert result.uncertain_steps == (0, 3, 6)
    frames = ase.io.read(tmp_path / "md.extxyz", ":")
    assert len(frames) == 3 and all(f.info["uncertain"] for f in frames)
    assert frames[0].info["forces_std_max"] == pytest.approx(spread, rel=1e-4)
    lines = (tmp_path / "md.log").read_text().splitlines()
    assert lines[1].endswith("forces_std_max_eV_A uncertain") and lines[2].split()[-1] == "1"
    quiet = run_md(ensemble, atoms, _cfg(tmp_path, uncertainty_threshold=1e3, overwrite=True))
    assert quiet.uncertain_steps == () and not any(f.info["uncertain"] for f in quiet.frames)


@pytest.mark.parametrize("engine", ["ase", pytest.param("jaxmd", marks=pytest.mark.slow)])
def test_stop_on_uncertainty(ensemble, tmp_path, engine):
    result = run_md(ensemble, ase.build.molecule("CH4"),
                    _cfg(tmp_path, uncertainty_threshold=1e-9, stop_on_uncertainty=True, engine=engine))
    assert not result.stable and result.steps_done == 0
    assert "uncertainty" in result.failure and "stop_on_uncertainty" in result.failure


def test_bad_uncertainty_settings(tmp_path):
    with pytest.raises(ConfigError, match="stop_on_uncertainty needs .*uncertainty_threshold"):
        load_md_config(values={"stop_on_uncertainty": True})
    with pytest.raises(ConfigError, match="uncertainty_threshold must be > 0"):
        load_md_config(values={"uncertainty_threshold": -1.0})
    single = random_potential_model(**FAST)
    with pytest.raises(ConfigError, match="needs an ensemble model"):
        run_md(single, ase.build.molecule("CH4"), _cfg(tmp_path, uncertainty_threshold=0.1))
