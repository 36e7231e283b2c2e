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
    parity: bool = option(
        True,
        "Keep parity: spherical harmonics 0e+1o+2e (O(3)-equivariant, reflection invariant). "
        "false: all irreps even, 0e+1e+2e (SO(3) only, as SevenNet-0's is_parity: False).",
    )
    fidelity_mode: Literal["conditioning", "heads"] = option(
        "conditioning",
        "How the fidelity enters: one-hot concatenated to intro/outro/first-readout linears (SevenNet), "
        "or fidelity-indexed readout heads.",
    )
    fidelity_embedding: bool = option(
        False,
        "Also concatenate the fidelity one-hot to the species one-hot of the node embedding "
        "(SevenNet's use_modal_node_embedding; any fidelity_mode; no effect with one fidelity). Off: species only.",
    )
    fidelity_scale: bool = option(
        False,
        "Trainable per-fidelity energy scale s[f] (initialised to 1): E_i = scale * s * e_i + E0[f, Z_i].",
    )
    fidelity_scale_per_species: bool = option(
        False, "With fidelity_scale: one scale per fidelity and species, s[f, Z_i] (SevenNet's modal-wise scale)."
    )

    def validate(self, where: str = "model") -> None:
        if self.cutoff <= 0:
            raise ConfigError(f"{where}.cutoff must be > 0, got {self.cutoff}")
        if self.num_layers < 1:
            raise ConfigError(f"{where}.num_layers must be >= 1, got {self.num_layers}")
        if self.lmax < 0 or self.num_basis < 1:
            raise ConfigError(f"{where}: lmax must be >= 0 and num_basis >= 1")
        if any(int(h) < 1 for h in self.radial_hidden):
            raise ConfigError(f"{where}.radial_hidden sizes must be >= 1, got {self.radial_hidden}")
        if self.fidelity_scale_per_species and not self.fidelity_scale:
            raise ConfigError(f"{where}.fidelity_scale_per_species needs {where}.fidelity_scale: true")
        import e3nn_jax as e3nn

        try:
            irreps = e3nn.Irreps(self.hidden_irreps)
        except Exception as exc:  # e3nn raises ValueError/AssertionError on bad strings
            raise ConfigError(f"{where}.hidden_irreps {self.hidden_irreps!r} is not valid irreps: {exc}") from None
        if irreps.count("0e") < 2:
            raise ConfigError(f"{where}.hidden_irreps needs at least 2 even scalars (0e), got {irreps}")
        if not self.parity and any(ir.p != 1 for _, ir in irreps):
            raise ConfigError(f"{where}.hidden_irreps {irreps} has odd irreps but parity is false")
        if any(ir.l > self.lmax for _, ir in irreps):
            raise ConfigError(f"{where}.hidden_irreps {irreps} has l > lmax = {self.lmax}")
