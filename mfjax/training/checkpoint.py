"""Orbax checkpoints of the training state plus the loop's position ("last" and "best").

Layout: ``RUN_DIR/checkpoints/{last,best}/<n>/{state,meta}``. Each save goes to a new increasing
``<n>`` (a save counter, not the training step, so saving twice at one step is fine); orbax writes
it under a temporary name and renames it when complete (``AtomicRenameTemporaryPath``), then deletes
the previous one (``max_to_keep=1``). A run killed at any moment therefore always leaves the
previous complete checkpoint; leftover temporary directories are cleaned up on the next start.

``meta`` is JSON: the data position (epoch, step index within the epoch), the global step, the
best validation value so far, the non-finite streak, and anything else the loop needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

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
        root = Path(run_dir) / "checkpoints"
        self._managers = {slot: _manager(root / slot) for slot in self.SLOTS}

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
        restored = manager.restore(
            number,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return restored["state"], dict(restored["meta"])

    def restore_meta(self, slot: str) -> dict[str, Any] | None:
        manager = self._managers[slot]
        number = manager.latest_step()
        if number is None:
            return None
        return dict(manager.restore(number, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
