"""Model hyper-parameters (SPEC §2-3). Presets live in ``mfjax/presets/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mfjax.utils.configtools import ConfigError, option


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the fidelity-conditioned equivariant potential (SevenNet/NequIP style)."""

    preset: str | None = option(None, "Name of a preset in mfjax/presets (e.g. 'sevennet-0', 'small'); keys given here override it.")
    cutoff: float = option(5.0, "Radial cutoff r_c in Å (set from data.cutoff when training).")
    num_layers: int = option(5, "Number of interaction blocks L.")
    hidden_irreps: str = option("128x0e+64x1e+32x2e", "Irreps of the hidden node features.")
    lmax: int = option(2, "Maximum degree of the edge spherical harmonics.")
    num_basis: int = option(8, "Number of trainable Bessel radial basis functions.")
    radial_hidden: tuple[int, ...] = option((64, 64), "Hidden sizes of the radial MLP (silu, no biases).")
    envelope: Literal["xplor", "polynomial"] = option("xplor", "Cutoff envelope: XPLOR switch (r_on = r_c - 0.5) or polynomial (p=6).")
    self_connection: Literal["linear", "nequip"] = option("linear", "Self-connection: linear, or tensor product with the species one-hot.")
    parity: bool = option(True, "Keep parity (odd/even) irreps distinct.")
    fidelity_mode: Literal["conditioning", "heads"] = option(
        "conditioning",
        "How the fidelity enters: one-hot concatenated to intro/outro/first-readout linears (SevenNet), "
        "or fidelity-indexed readout heads.",
    )

    def validate(self, where: str = "model") -> None:
        if self.cutoff <= 0:
            raise ConfigError(f"{where}.cutoff must be > 0, got {self.cutoff}")
        if self.num_layers < 1:
            raise ConfigError(f"{where}.num_layers must be >= 1, got {self.num_layers}")
