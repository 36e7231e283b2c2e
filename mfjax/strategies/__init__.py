"""Multi-fidelity strategies and their ablation (SPEC §5; ``mfjax ablate``).

Strategies (each ``run(ctx, hf_train, seed) -> Outcome``): ``hf_only``, ``transfer``, ``delta``,
``multi_fidelity`` / ``multi_fidelity_heads`` and ``append``. ``ablate.ablate`` runs them over HF
fractions and seeds on shared splits; ``settings`` holds the ``ablation:`` config section.
"""

from mfjax.strategies.settings import STRATEGIES, AblationSettings, load_ablation_config

__all__ = ["STRATEGIES", "AblationSettings", "load_ablation_config"]
