"""Training: loss, metrics, optimiser, sharded steps, the one training loop (``fit``), checkpoints
and the CLI commands.

Library entry points: ``mfjax.training.fit.fit(model, train, valid, train_cfg, ...) -> FitResult``
(one step-budgeted loop under ``mfjax train`` and every ablation stage),
``mfjax.training.loop.train(cfg, resume=False) -> TrainResult`` (``mfjax train``) and
``mfjax.training.evaluation.evaluate(model, structures) -> {fidelity: metrics}``.
"""
