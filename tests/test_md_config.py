"""MD as a library: ``MDConfig`` (strict YAML keys, impossible values named, template round trip),
``run_md`` called without argparse, unknown elements refused for both engines, and ``mfjax md
--config`` giving the same trajectory as the flags."""

from __future__ import annotations

from dataclasses import replace

import ase.build
import ase.io
import jax
import numpy as np
import pytest
import yaml

from mfjax.cli import main
from mfjax.errors import ConfigError
from mfjax.md.config import MDConfig, load_md_config, md_config_template
from mfjax.md.simulate import MDResult, run_md
from mfjax.md.lennard_jones import lennard_jones_model
from mfjax.utils.configtools import from_dict


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "md.yaml"
    path.write_text("fidelity: high\ntempreature: 500\n")
    with pytest.raises(ConfigError, match=r"'tempreature'.*did you mean 'temperature'"):
        load_md_config(path)


def test_yaml_values_and_overrides(tmp_path):
    path = tmp_path / "md.yaml"
    path.write_text("fidelity: high\nensemble: nve\nsteps: 50\n")
    cfg = load_md_config(path, ["steps=20", "msd_species=Si"], values={"ensemble": "npt"})
    assert (cfg.fidelity, cfg.ensemble, cfg.steps, cfg.msd_species) == ("high", "npt", 20, "Si")
    with pytest.raises(ConfigError, match="ensemble.*'nvx'.*did you mean 'nvt'"):
        load_md_config(path, ["ensemble=nvx"])


@pytest.mark.parametrize("key,value", [
    ("steps", 0), ("interval", 0), ("timestep", 0.0), ("timestep", -1.0), ("temperature", -1.0),
    ("friction", 0.0), ("min_distance", 0.0), ("max_temperature_factor", 0.0), ("max_drift", 0.0),
    ("seed", -1), ("traj", "out.dat"), ("msd_species", "Xx"), ("checkpoint_every", 0),
])
def test_impossible_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_md_config(None, [f"{key}={value}"])
    with pytest.raises(ConfigError, match=rf"md\.{key}"):
        MDConfig(**{key: value}).validate()


def test_friction_only_matters_for_langevin():
    MDConfig(ensemble="nve", friction=0.0).validate()
    with pytest.raises(ConfigError, match=r"md\.engine"):
        MDConfig(engine="lammps").validate()


def test_template_md_parses_back_to_the_default(tmp_path, capsys):
    assert main(["template", "md"]) == 0
    text = capsys.readouterr().out
    assert text == md_config_template() and "# Langevin friction" in text
    assert from_dict(MDConfig, yaml.safe_load(text)) == MDConfig()
    path = tmp_path / "md.yaml"
    assert main(["template", "md", "-o", str(path)]) == 0
    assert load_md_config(path) == MDConfig()
    assert main(["template"]) == 0  # the training config stays the default kind
    assert "datasets" in capsys.readouterr().out


def test_run_md_as_a_library(si):
    model = lennard_jones_model({"low": 0.010, "high": 0.012}, sigma=2.2, cutoff=5.0, species=(14,))
    positions = si.positions.copy()
    lines: list[str] = []
    cfg = MDConfig(fidelity="high", steps=20, interval=10, temperature=300.0, msd_species="Si")
    result = run_md(model, si, cfg, progress=lines.append)
    assert isinstance(result, MDResult) and result.stable and result.failure_time_fs is None
    assert len(result.frames) == 3 and result.steps_done == 20 and result.ns_per_day > 0
    assert all(np.isfinite(f.get_potential_energy()) and len(f) == len(si) for f in result.frames)
    assert not np.allclose(result.frames[-1].positions, result.frames[0].positions)
    assert result.diffusion is None  # 3 frames are too few for the Einstein fit
    assert len(lines) == 3 and all("ns/day" in line for line in lines)
    np.testing.assert_array_equal(si.positions, positions)  # the input structure is not modified


def test_a_failed_run_gets_no_diffusion_fit(si):
    """The trajectory of a failed run ends in the failure: no Einstein fit, however many frames
    (a run of the same length that does not fail gets one)."""
    model = lennard_jones_model({"low": 0.010, "high": 0.012}, sigma=2.2, cutoff=5.0, species=(14,))
    cfg = MDConfig(fidelity="high", steps=40, interval=2, temperature=1500.0, msd_species="Si", quiet=True)
    failed = run_md(model, si, replace(cfg, min_distance=2.2), progress=None)  # Si-Si 2.35 Å: fails at ~12 fs
    assert not failed.stable and len(failed.frames) >= 5 and failed.diffusion is None
    calm = run_md(model, si, cfg, progress=None)
    assert calm.stable and calm.diffusion is not None and calm.diffusion.D > 0


@pytest.mark.parametrize("engine", ["jaxmd", "ase"])
def test_unknown_element_refused_by_both_engines(si, engine):
    model = lennard_jones_model(species=(1, 8))
    with pytest.raises(ConfigError, match=r"si\.extxyz \(Si8\).*Si \(Z=14\).*knows H, O"):
        run_md(model, si, MDConfig(fidelity="low", steps=1, engine=engine), name="si.extxyz")


def test_float64_needs_x64_in_the_library(si):
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit JAX is already on in this process")
    with pytest.raises(ConfigError, match="precision"):
        run_md(lennard_jones_model(species=(14,)), si, MDConfig(fidelity="low", precision="float64"))


def test_cli_config_file_equals_flags(tmp_path, si_file, capsys):
    flags = tmp_path / "flags.extxyz"
    assert main(["md", "toy-lj", str(si_file), "--fidelity", "high", "--temperature", "500", "--steps", "20",
                 "--interval", "10", "--seed", "3", "--traj", str(flags), "--quiet"]) == 0
    config = tmp_path / "md.yaml"
    config.write_text(yaml.safe_dump({"fidelity": "high", "temperature": 500, "steps": 20, "interval": 10,
                                      "seed": 3, "quiet": True, "traj": str(tmp_path / "file.extxyz")}))
    assert main(["md", "toy-lj", str(si_file), "--config", str(config)]) == 0
    a, b = ase.io.read(flags, ":"), ase.io.read(tmp_path / "file.extxyz", ":")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.get_potential_energy() == y.get_potential_energy()
    # flags win over the file, --set wins over both
    assert main(["md", "toy-lj", str(si_file), "--config", str(config), "--steps", "30",
                 "--set", "steps=10", "--set", f"traj={tmp_path / 'set.extxyz'}"]) == 0
    assert len(ase.io.read(tmp_path / "set.extxyz", ":")) == 2
    assert "stability: stable for the full 10.0 fs" in capsys.readouterr().out


def test_cli_bad_config_key_exits_2(tmp_path, si_file, capsys):
    config = tmp_path / "md.yaml"
    config.write_text("fidelty: high\n")
    assert main(["md", "toy-lj", str(si_file), "--config", str(config)]) == 2
    assert "did you mean 'fidelity'" in capsys.readouterr().err
