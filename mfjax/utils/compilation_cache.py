"""JAX's persistent compilation cache in a per-user folder, on by default for the ``mfjax`` CLI.

A compiled step of the sevennet-0 preset costs ~10-20 s on a CPU; with the cache, a second
``mfjax evaluate`` / ``mfjax md`` / ``mfjax relax`` of the same model loads it from disk instead.
The folder is ``$MFJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/mfjax/xla`` (``~/.cache/mfjax/xla``).
Opt out with ``MFJAX_NO_COMPILATION_CACHE=1``; a cache folder the user set for JAX
(``JAX_COMPILATION_CACHE_DIR``) is respected as it is. Library code never calls this by itself:
the CLI does, and Python users may (``mfjax.utils.compilation_cache.enable()``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_dir", "enable"]


def default_dir() -> Path:
    """The per-user cache folder (see the module docstring)."""
    if os.environ.get("MFJAX_CACHE_DIR"):
        return Path(os.environ["MFJAX_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "mfjax" / "xla"


def enable(min_compile_seconds: float = 1.0) -> Path | None:
    """Turn the persistent cache on; returns its folder, or None when opted out / not writable.

    min_compile_seconds: only computations that took longer than this to compile are stored.
    """
    if os.environ.get("MFJAX_NO_COMPILATION_CACHE", "").strip() not in ("", "0"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = default_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return folder
