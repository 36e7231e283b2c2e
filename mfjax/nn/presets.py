"""Model presets shipped as YAML files in ``mfjax/presets`` (also linked from ``configs/presets``)."""

from __future__ import annotations

from pathlib import Path

from mfjax.nn.config import ModelConfig
from mfjax.utils.configtools import ConfigError, from_dict, read_yaml

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown model preset {name!r}; available: {available_presets()}")
    return path


def load_preset(name: str, **overrides) -> ModelConfig:
    """The ``ModelConfig`` of a preset, with keyword overrides (validated)."""
    raw = read_yaml(preset_path(name))
    raw.update(overrides)
    raw["preset"] = name
    config = from_dict(ModelConfig, raw)
    config.validate()
    return config
