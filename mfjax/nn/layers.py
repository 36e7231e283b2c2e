"""Equivariant layers of the potential (SPEC §2-3): pure functions plus thin flax shells.

Shapes: ``N`` nodes, ``E`` edges, ``S`` model species, ``F`` fidelities, ``B`` radial basis size.
Node features are ``e3nn.IrrepsArray`` of shape [N, irreps.dim].

Fidelity conditioning (SPEC §3): the fidelity one-hot [N, F] is concatenated *in front of* the
input of Linear_intro, Linear_outro and the first readout linear as F extra 0e channels. e3nn's
``Linear`` normalises each output block by 1/sqrt(fan_in) in the forward pass, so the shared
weights are normalised by 1/sqrt(fan_in + F) and the one-hot adds a learned per-fidelity bias to
every scalar output channel. After e3nn's regrouping the one-hot rows are rows ``0..F-1`` of the
linear's ``(fan_in + F)x0e -> ...x0e`` weight (``mfjax.nn.model`` relies on this).
"""

from __future__ import annotations

from typing import Literal, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from mfjax.nn.tensor_product import (
    node_rows,
    rows_to_irreps_array,
    tensor_product_plan,
    weighted_edge_messages,
)

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------
def with_fidelity(x: e3nn.IrrepsArray, fidelity_onehot: Array | None) -> e3nn.IrrepsArray:
    """Prepend the fidelity one-hot [N, F] to node features [N, d] as F scalar (0e) channels.

    Returns [N, F + d] with irreps ``Fx0e + x.irreps`` (x unchanged when the one-hot is None).
    """
    if fidelity_onehot is None:
        return x
    assert fidelity_onehot.ndim == 2 and fidelity_onehot.shape[0] == x.shape[0]
    onehot = e3nn.IrrepsArray(f"{fidelity_onehot.shape[1]}x0e", fidelity_onehot.astype(x.dtype))
    return e3nn.concatenate([onehot, x], axis=-1)


def convolution_irreps(
    irreps_x: e3nn.Irreps, irreps_sh: e3nn.Irreps, filter_ir_out: Sequence[e3nn.Irrep]
) -> e3nn.Irreps:
    """Irreps of the per-path messages of ``convolution`` (one chunk of mul_x per path, "uvu").

    Paths: every (x chunk, sh chunk, ir_out in ir_x * ir_sh) with ir_out in ``filter_ir_out``.
    ``.num_irreps`` of the result is the number of radial weights per edge (SevenNet's
    ``weight_numel``).
    """
    filt = {e3nn.Irrep(ir) for ir in filter_ir_out}
    out = []
    for mul_x, ir_x in e3nn.Irreps(irreps_x):
        for _, ir_sh in e3nn.Irreps(irreps_sh):
            out += [(mul_x, ir) for ir in ir_x * ir_sh if ir in filt]
    return e3nn.Irreps(out)


def convolution(
    node_feats: e3nn.IrrepsArray,
    edge_sh: e3nn.IrrepsArray,
    edge_radial_weights: Array,
    senders: Array,
    receivers: Array,
    num_nodes: int,
    avg_num_neighbors: float,
    filter_ir_out: Sequence[e3nn.Irrep],
) -> e3nn.IrrepsArray:
    r"""Point convolution: :math:`x'_i = \frac{1}{\bar n} \sum_{j \in N(i)} w_{ij} \otimes (x_j \otimes Y(\hat r_{ij}))`.

    node_feats: [N, irreps_x.dim]; edge_sh: [E, sh.dim]; edge_radial_weights: [E, P] with
    P = ``convolution_irreps(...).num_irreps`` (one weight per path and channel, from the radial
    MLP; 0 on padding edges); senders/receivers: [E] (j, i). Returns [N, irreps_mid.dim] with
    irreps ``convolution_irreps(irreps_x, sh, filter_ir_out).regroup()``: sorted by irrep like
    ``e3nn.tensor_product`` (the same array) with the paths of one irrep merged, built from its
    chunks (see ``rows_to_irreps_array``). The edge tensor product is
    ``mfjax.nn.tensor_product.weighted_edge_messages`` (equal to ``convolution_e3nn``).
    """
    num_edges = senders.shape[0]
    plan = tensor_product_plan(node_feats.irreps, edge_sh.irreps, tuple(filter_ir_out))
    expected = convolution_irreps(node_feats.irreps, edge_sh.irreps, filter_ir_out)
    assert plan.irreps_out.regroup() == expected.regroup(), (plan.irreps_out, expected)
    assert edge_radial_weights.shape == (num_edges, expected.num_irreps), edge_radial_weights.shape
    # per chunk and component i the [N, u] rows, gathered by sender; messages per path and
    # output component k [E, u], each summed over the receivers
    x_edge = tuple(
        tuple(row[senders] for row in rows) for rows in node_rows(node_feats.array, node_feats.irreps)
    )
    messages = weighted_edge_messages(
        plan, x_edge, edge_sh.array.astype(node_feats.dtype), edge_radial_weights.astype(node_feats.dtype)
    )
    summed = [
        [jax.ops.segment_sum(m, receivers, num_segments=num_nodes) for m in path_messages]
        for path_messages in messages
    ]
    out = rows_to_irreps_array(plan, summed, divisor=avg_num_neighbors)
    assert out.shape == (num_nodes, expected.dim), out.shape
    return out


def convolution_e3nn(
    node_feats: e3nn.IrrepsArray,
    edge_sh: e3nn.IrrepsArray,
    edge_radial_weights: Array,
    senders: Array,
    receivers: Array,
    num_nodes: int,
    avg_num_neighbors: float,
    filter_ir_out: Sequence[e3nn.Irrep],
) -> e3nn.IrrepsArray:
    """``convolution`` through ``e3nn.tensor_product`` (the reference it is tested against)."""
    x_j = e3nn.IrrepsArray(node_feats.irreps, node_feats.array[senders])
    messages = e3nn.tensor_product(x_j, edge_sh, filter_ir_out=filter_ir_out, regroup_output=False)
    messages = messages * edge_radial_weights.astype(messages.dtype)
    summed = jax.ops.segment_sum(messages.array, receivers, num_segments=num_nodes)
    return e3nn.IrrepsArray(messages.irreps, summed / avg_num_neighbors)


def gate_irreps(irreps_out: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps the gate needs as input to produce ``irreps_out``: scalars + gates (0e, one per
    non-scalar irrep) + non-scalars, simplified. E.g. 128x0e+64x1e+32x2e -> 224x0e+64x1e+32x2e.
    """
    irreps_out = e3nn.Irreps(irreps_out)
    scalars = e3nn.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = e3nn.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    return (scalars + e3nn.Irreps(f"{gated.num_irreps}x0e") + gated).simplify()


def gate(x: e3nn.IrrepsArray, irreps_out: e3nn.Irreps) -> e3nn.IrrepsArray:
    """Gated nonlinearity (NequIP/SevenNet).

    x: [N, gate_irreps(irreps_out).dim] laid out as (scalars, gates, gated). Even scalars -> silu,
    odd scalars -> tanh; gates (all 0e) -> silu; each non-scalar irrep is multiplied by its gate.
    Activations are normalised to unit second moment (e3nn). Returns [N, irreps_out.dim].
    """
    irreps_out = e3nn.Irreps(irreps_out)
    scalars = e3nn.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = e3nn.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    n_gates = gated.num_irreps
    a = x.array
    assert a.shape[-1] == scalars.dim + n_gates + gated.dim, (x.irreps, irreps_out)
    s = e3nn.scalar_activation(
        e3nn.IrrepsArray(scalars, a[..., : scalars.dim]), even_act=jax.nn.silu, odd_act=jnp.tanh
    )
    parts = [s]
    if n_gates:
        g = e3nn.scalar_activation(
            e3nn.IrrepsArray(f"{n_gates}x0e", a[..., scalars.dim : scalars.dim + n_gates]),
            even_act=jax.nn.silu,
        )
        v = e3nn.IrrepsArray(gated, a[..., scalars.dim + n_gates :])
        parts.append(v * g.array)
    out = e3nn.concatenate(parts, axis=-1)
    return e3nn.IrrepsArray(irreps_out, out.array)


# ---------------------------------------------------------------------------------------------
# flax shells
# ---------------------------------------------------------------------------------------------
class SpeciesEmbedding(nn.Module):
    """one-hot(species) [N, S] -> Linear (no bias) -> C scalars [N, Cx0e].

    With a fidelity one-hot [N, F] (``model.fidelity_embedding``) the linear's input is
    ``fidelity one-hot ⊕ species one-hot`` [N, F + S] (SevenNet's modal node embedding).
    """

    channels: int

    @nn.compact
    def __call__(self, species_onehot: Array, fidelity_onehot: Array | None = None) -> e3nn.IrrepsArray:
        onehot = e3nn.IrrepsArray(f"{species_onehot.shape[-1]}x0e", species_onehot)
        return e3nn.flax.Linear(f"{self.channels}x0e", name="linear")(with_fidelity(onehot, fidelity_onehot))


class InteractionBlock(nn.Module):
    """One NequIP/SevenNet interaction block (SPEC §2 steps 1-6).

    x [N, irreps_in] -> gate(Linear_outro(conv(Linear_intro(x))) + sc(x)) [N, irreps_out].
    ``fidelity_onehot`` [N, F] (or None) enters Linear_intro and Linear_outro.
    """

    irreps_out: str
    filter_ir_out: tuple[str, ...]
    radial_hidden: tuple[int, ...]
    avg_num_neighbors: float
    num_species: int
    self_connection: Literal["linear", "nequip"] = "linear"

    @nn.compact
    def __call__(
        self,
        x: e3nn.IrrepsArray,
        species_index: Array,
        fidelity_onehot: Array | None,
        edge_sh: e3nn.IrrepsArray,
        edge_radial: Array,
        senders: Array,
        receivers: Array,
    ) -> e3nn.IrrepsArray:
        num_nodes = x.shape[0]
        irreps_out = e3nn.Irreps(self.irreps_out)
        irreps_gate = gate_irreps(irreps_out)
        linear = lambda irreps, name, **kw: e3nn.flax.Linear(  # noqa: E731
            irreps, force_irreps_out=True, name=name, **kw
        )
        if self.self_connection == "linear":
            sc = linear(irreps_gate, "self_connection")(x)
        else:  # tensor product with the species one-hot == species-indexed linear
            sc = linear(irreps_gate, "self_connection", num_indexed_weights=self.num_species)(
                species_index, x
            )
        h = linear(x.irreps, "linear_intro")(with_fidelity(x, fidelity_onehot))
        assert h.irreps == x.irreps, (h.irreps, x.irreps)
        filt = tuple(e3nn.Irrep(ir) for ir in self.filter_ir_out)
        irreps_mid = convolution_irreps(h.irreps, edge_sh.irreps, filt)
        weights = e3nn.flax.MultiLayerPerceptron(
            tuple(self.radial_hidden) + (irreps_mid.num_irreps,),
            act=jax.nn.silu,
            output_activation=False,
            with_bias=False,
            name="radial_mlp",
        )(edge_radial)
        h = convolution(
            h, edge_sh, weights, senders, receivers, num_nodes, self.avg_num_neighbors, filt
        )
        h = linear(irreps_gate, "linear_outro")(with_fidelity(h, fidelity_onehot))
        assert h.irreps == sc.irreps == irreps_gate, (h.irreps, sc.irreps, irreps_gate)
        out = gate(h + sc, irreps_out)
        assert out.shape == (num_nodes, irreps_out.dim), out.shape
        return out


class Readout(nn.Module):
    """Scalars [N, Cx0e] -> Linear(C -> hidden) -> Linear(hidden -> 1): [N] (no nonlinearity).

    ``conditioning``: the fidelity one-hot [N, F] (or None) enters the first linear.
    ``heads``: both linears are fidelity-indexed (one set of weights per fidelity).
    """

    hidden: int
    num_fidelities: int
    mode: Literal["conditioning", "heads"] = "conditioning"

    @nn.compact
    def __call__(
        self, x: e3nn.IrrepsArray, fidelity_onehot: Array | None, node_fidelity: Array
    ) -> Array:
        x = x.filter(keep="0e")
        if self.mode == "heads":
            kw = dict(num_indexed_weights=self.num_fidelities)
            h = e3nn.flax.Linear(f"{self.hidden}x0e", name="readout_hidden", **kw)(node_fidelity, x)
            e = e3nn.flax.Linear("1x0e", name="readout_energy", **kw)(node_fidelity, h)
        else:
            h = e3nn.flax.Linear(f"{self.hidden}x0e", name="readout_hidden")(
                with_fidelity(x, fidelity_onehot)
            )
            e = e3nn.flax.Linear("1x0e", name="readout_energy")(h)
        assert e.shape == (x.shape[0], 1), e.shape
        return e.array[:, 0]
