"""The persistent compilation cache: on by default for the CLI in a per-user folder, opt-out by an
environment variable, and a second process reuses what the first compiled."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from mfjax.utils import compilation_cache


@pytest.fixture
def restore_cache_config():
    previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])


def test_enable_uses_the_per_user_folder_and_respects_opt_out(tmp_path, monkeypatch, restore_cache_config):
    monkeypatch.setenv("MFJAX_NO_COMPILATION_CACHE", "1")
    assert compilation_cache.enable() is None
    monkeypatch.delenv("MFJAX_NO_COMPILATION_CACHE")
    monkeypatch.delenv("MFJAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.default_dir() == tmp_path / "xdg" / "mfjax" / "xla"
    jax.config.update("jax_compilation_cache_dir", None)
    assert compilation_cache.enable() == tmp_path / "xdg" / "mfjax" / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "mfjax" / "xla")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))  # a folder the user chose wins
    assert compilation_cache.enable() == tmp_path / "mine"


SCRIPT = """
import time, jax, jax.numpy as jnp
from mfjax.utils import compilation_cache
compilation_cache.enable(min_compile_seconds=0.0)
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + x.sum())
t = time.perf_counter(); f(jnp.ones((64, 64))).block_until_ready(); print(time.perf_counter() - t)
"""


def test_a_second_process_finds_the_compiled_function(tmp_path):
    env = {**os.environ, "MFJAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    env.pop("MFJAX_NO_COMPILATION_CACHE", None)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, capture_output=True, timeout=120)
    assert any((tmp_path / "cache").iterdir())  # the first process wrote an entry the second could read
