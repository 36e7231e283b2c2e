"""Orbax checkpoints of the training state plus the loop's position ("last" and "best").

Layout: ``RUN_DIR/checkpoints/{last,best}/<n>/{state,meta}``. Each save goes to a new increasing
``<n>`` (a save counter, not the training step, so saving twice at one step is fine); orbax writes
it under a temporary name and renames it when complete (``AtomicRenameTemporaryPath``), then deletes
the previous one (``max_to_keep=1``). A run killed at any moment therefore always leaves the
previous complete checkpoint; leftover temporary directories are cleaned up on the next start.

``meta`` is JSON: the data position (epoch, step index within the epoch), the global step, the
best validation value so far, the non-finite streak, and anything else the loop needs.

A checkpoint that cannot be restored into the target (another model size or fidelity count, EMA
switched on or off, a corrupt or truncated file) is one ``ConfigError`` line naming the run
directory, never an Orbax traceback. Every process of a multi-process run calls ``save`` and
``restore`` (Orbax coordinates them; process 0 writes the replicated arrays and the metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from mfjax.errors import ConfigError
from mfjax.training.state import TrainState


def _manager(directory: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(directory.resolve(), options=options, item_names=("state", "meta"))


class Checkpoints:
    """The "last" and "best" checkpoint slots of one run directory."""

    SLOTS = ("last", "best")

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        root = self.run_dir / "checkpoints"
        try:
            self._managers = {slot: _manager(root / slot) for slot in self.SLOTS}
        except Exception as exc:  # an unreadable checkpoint directory
            raise self._error("the checkpoint directory", exc) from None

    def _error(self, what: str, exc: Exception) -> ConfigError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        return ConfigError(
            f"{self.run_dir}: {what} cannot be restored ({type(exc).__name__}: {reason}); it was written for "
            f"another model/config or is corrupt: start afresh with --overwrite, or use another --output"
        )

    def exists(self, slot: str = "last") -> bool:
        return self._managers[slot].latest_step() is not None

    def save(self, slot: str, state: TrainState, meta: dict[str, Any]) -> None:
        manager = self._managers[slot]
        latest = manager.latest_step()
        number = 0 if latest is None else latest + 1
        manager.save(
            number,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        manager.wait_until_finished()

    def restore(self, slot: str, target: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """(state, meta) of the newest complete checkpoint in ``slot``, shaped and sharded like
        ``target``; None when there is none."""
        manager = self._managers[slot]
        number = manager.latest_step()
        if number is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = manager.restore(
                number,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
            )
            state, meta = restored["state"], dict(restored["meta"])
            _check_like(state, abstract)
        except Exception as exc:
            raise self._error(f"checkpoint {slot}/{number}", exc) from None
        return state, meta

    def restore_meta(self, slot: str) -> dict[str, Any] | None:
        manager = self._managers[slot]
        number = manager.latest_step()
        if number is None:
            return None
        try:
            return dict(manager.restore(number, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        except Exception as exc:
            raise self._error(f"checkpoint {slot}/{number}", exc) from None

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()


def _check_like(state, abstract) -> None:
    """Orbax may restore a tree of other leaf shapes without complaint: insist on the target's."""
    got_leaves, want_leaves = jax.tree.leaves(state), jax.tree.leaves(abstract)
    if len(got_leaves) != len(want_leaves):
        raise ValueError(f"{len(got_leaves)} arrays where the model has {len(want_leaves)}")
    for got, want in zip(got_leaves, want_leaves):
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise ValueError(f"an array of shape {tuple(got.shape)} {got.dtype} where the model has "
                             f"{tuple(want.shape)} {want.dtype}")
