"""Training: loss, metrics, optimiser, sharded steps, the loop, checkpoints and the CLI commands.

Library entry point: ``mfjax.training.train(cfg, resume=False) -> TrainResult``.
"""

from __future__ import annotations

__all__ = ["train", "TrainResult"]


def __getattr__(name: str):
    if name in __all__:
        from mfjax.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
