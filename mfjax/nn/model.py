"""The fidelity-conditioned equivariant potential (SPEC §2-3) and helpers on its variables.

``Potential(config, species, fidelities, avg_num_neighbors).apply(variables, graph, edge_vectors)``
returns atomic energies [N] in eV, ``E_i = scale * e_i + E0[fidelity_i, species_i]``, exactly 0 on
padding nodes. Variables: ``{"params": ..., "constants": {"e0": [F, S], "scale": []}}``; only
"params" are trained (and counted by ``count_parameters``).

Options (all off by default; off, the parameters and the computation are those of the plain model):
``fidelity_embedding`` feeds the fidelity one-hot to the node embedding as well;
``fidelity_scale`` adds a trained param ``fidelity_scale`` [F, 1] ([F, S] per species), initialised
to 1, with ``E_i = scale * fidelity_scale[f_i, s_i] * e_i + E0[f_i, s_i]``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import Graph, edge_vectors, node_graph_index, node_mask, num_edges, num_nodes
from mfjax.nn.config import ModelConfig
from mfjax.nn.layers import InteractionBlock, Readout, SpeciesEmbedding
from mfjax.nn.radial import EdgeEmbedding, sh_irreps

Array = jax.Array
Variables = dict[str, Any]

MAX_Z = 118
#: Linears that receive the fidelity one-hot in ``conditioning`` mode (SPEC §3).
CONDITIONED_LINEARS = ("linear_intro", "linear_outro", "readout_hidden")


def species_table(species: Sequence[int]) -> np.ndarray:
    """[max(MAX_Z, max Z) + 1] int32 lookup Z -> model species index (unknown Z, Z = 0 -> 0).

    Unknown elements are rejected by data validation before they reach the model.
    """
    table = np.zeros(max([MAX_Z] + [int(z) for z in species]) + 1, dtype=np.int32)
    for index, z in enumerate(species):
        if int(z) <= 0:
            raise ValueError(f"atomic numbers must be positive, got {z}")
        table[int(z)] = index
    return table


def block_irreps(config: ModelConfig) -> list[tuple[e3nn.Irreps, tuple[e3nn.Irrep, ...]]]:
    """(output irreps, allowed message irreps) of every interaction block.

    Hidden blocks output ``hidden_irreps`` (regrouped); the last block outputs only its C even
    scalars and keeps only 0e messages (SevenNet's last layer).
    """
    hidden = e3nn.Irreps(config.hidden_irreps).regroup()
    channels = hidden.count("0e")
    out = []
    for t in range(config.num_layers):
        if t == config.num_layers - 1:
            out.append((e3nn.Irreps(f"{channels}x0e"), (e3nn.Irrep("0e"),)))
        else:
            out.append((hidden, tuple(ir for _, ir in hidden)))
    return out


class Potential(nn.Module):
    """Atomic energies of a padded batch graph. See the module docstring.

    config: architecture; species: atomic numbers known to the model (index = position);
    fidelities: fidelity names (index = position); avg_num_neighbors: convolution denominator.
    """

    config: ModelConfig
    species: tuple[int, ...]
    fidelities: tuple[str, ...]
    avg_num_neighbors: float

    @nn.compact
    def __call__(self, graph: Graph, edge_vectors: Array) -> Array:
        cfg = self.config
        n_species, n_fid = len(self.species), len(self.fidelities)
        n_nodes, n_edges = num_nodes(graph), num_edges(graph)
        assert edge_vectors.shape == (n_edges, 3), edge_vectors.shape
        dtype = edge_vectors.dtype

        species_index = jnp.asarray(species_table(self.species))[graph.nodes.species]
        node_fidelity = graph.globals.fidelity[node_graph_index(graph)]
        onehot = jax.nn.one_hot(node_fidelity, n_fid, dtype=dtype) if n_fid > 1 else None
        fid_onehot = onehot if cfg.fidelity_mode == "conditioning" else None

        radial, sh = EdgeEmbedding(
            cfg.cutoff, cfg.num_basis, cfg.lmax, cfg.parity, cfg.envelope, name="edge_embedding"
        )(edge_vectors)

        channels = e3nn.Irreps(cfg.hidden_irreps).count("0e")
        x = SpeciesEmbedding(channels, name="species_embedding")(
            jax.nn.one_hot(species_index, n_species, dtype=dtype), onehot if cfg.fidelity_embedding else None
        )
        for t, (irreps_out, filt) in enumerate(block_irreps(cfg)):
            x = InteractionBlock(
                irreps_out=str(irreps_out),
                filter_ir_out=tuple(str(ir) for ir in filt),
                radial_hidden=tuple(cfg.radial_hidden),
                avg_num_neighbors=float(self.avg_num_neighbors),
                num_species=n_species,
                self_connection=cfg.self_connection,
                name=f"block_{t}",
            )(x, species_index, fid_onehot, sh, radial, graph.senders, graph.receivers)

        e = Readout(channels // 2, n_fid, cfg.fidelity_mode, name="readout")(
            x, fid_onehot, node_fidelity
        )
        e0 = self.variable(
            "constants", "e0", lambda: jnp.zeros((n_fid, n_species), dtype)
        ).value
        scale = self.variable("constants", "scale", lambda: jnp.ones((), dtype)).value
        if cfg.fidelity_scale:
            shape = (n_fid, n_species if cfg.fidelity_scale_per_species else 1)
            s = jnp.asarray(self.param("fidelity_scale", lambda _, shape: jnp.ones(shape, dtype), shape))
            e = s[node_fidelity, species_index if cfg.fidelity_scale_per_species else 0] * e
        energies = scale * e + e0[node_fidelity, species_index]
        energies = jnp.where(node_mask(graph), energies, 0.0)
        assert energies.shape == (n_nodes,), energies.shape
        return energies


def init_variables(
    module: Potential, rng: Array, graph: Graph, e0: Any = None, scale: float = 1.0
) -> Variables:
    """Initialise params with a (small) example graph and set the constants.

    e0: [F, S] per-fidelity, per-species energy shifts (zeros if None); scale: energy scale.
    Params take the dtype of ``graph.nodes.positions``.

    Shapes come from tracing ``module.init`` (``jax.eval_shape``, no XLA compilation); values are
    drawn on the host: every weight is N(0, 1), as e3nn's Linear and MultiLayerPerceptron draw them
    (their 1/sqrt(fan_in) normalisation is applied in the forward pass), and the Bessel
    frequencies are n pi / r_c. An unknown parameter name is an error, not a silent guess.
    """
    vectors = edge_vectors(graph)
    shapes = jax.eval_shape(module.init, rng, graph, vectors)["params"]
    seed = np.asarray(jax.random.key_data(rng)).astype(np.uint32).ravel()
    host_rng = np.random.default_rng(seed)

    def draw(path: tuple, leaf: jax.ShapeDtypeStruct) -> Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "bessel_frequencies":
            value = np.arange(1, leaf.shape[0] + 1) * (math.pi / module.config.cutoff)
        elif name == "fidelity_scale":
            value = np.ones(leaf.shape)
        elif name.startswith("w[") or name == "kernel":
            value = host_rng.standard_normal(leaf.shape)
        else:
            raise ValueError(f"init_variables: no initialiser for parameter {jax.tree_util.keystr(path)}")
        return jnp.asarray(value, dtype=leaf.dtype)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    dtype = vectors.dtype
    shape = (len(module.fidelities), len(module.species))
    e0 = jnp.zeros(shape, dtype) if e0 is None else jnp.asarray(e0, dtype)
    if e0.shape != shape:
        raise ValueError(f"e0 must have shape {shape} (fidelities, species), got {e0.shape}")
    return {"params": params, "constants": {"e0": e0, "scale": jnp.asarray(scale, dtype)}}


def count_parameters(params: Any) -> int:
    """Number of trainable scalars (the "params" collection, ``fidelity_scale`` included; the
    constants E0 and scale are not counted)."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------------------
# fidelity-specific weights
# ---------------------------------------------------------------------------------------------
_SCALAR_WEIGHT = re.compile(r"^w\[(\d+),(\d+)\] (\d+)x0e,(\d+)x0e$")


def _conditioned_scalar_weights(params: Any) -> list[tuple[tuple[str, ...], str]]:
    """(module path, key) of the 0e->0e weight of every one-hot-conditioned linear."""
    found = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, path + (key,))
            elif path and path[-1] in CONDITIONED_LINEARS and _SCALAR_WEIGHT.match(key):
                found.append((path, key))

    walk(params, ())
    return found


def _onehot_weights(params: Any, config: ModelConfig) -> list[tuple[tuple[str, ...], str]]:
    """(module path, key) of every 0e->0e weight whose first rows multiply the fidelity one-hot:
    the conditioned linears (conditioning mode) and the node embedding (``fidelity_embedding``)."""
    found = _conditioned_scalar_weights(params) if config.fidelity_mode == "conditioning" else []
    if config.fidelity_embedding:
        path = ("species_embedding", "linear")
        found += [(path, key) for key in _get(params, path) if _SCALAR_WEIGHT.match(key)]
    return found


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def fidelity_weight_mask(params: Any, config: ModelConfig, num_fidelities: int) -> Any:
    """Pytree like ``params``: 1 on fidelity-specific weights, 0 on shared ones.

    Conditioning mode: the one-hot rows of the conditioned linears (all zeros with one fidelity,
    which has no one-hot). Heads mode: the whole (fidelity-indexed) readout. With
    ``fidelity_embedding`` also the one-hot rows of the node embedding. ``fidelity_scale`` (a scale
    around 1, not a weight around 0) is not included. Use it to zero, inspect or L2-penalise the
    fidelity-specific weights; it works on traced params too (only names and shapes are read).
    """
    mask = _thaw(jax.tree.map(lambda w: np.zeros(np.shape(w), np.float32), params))
    if config.fidelity_mode == "heads":
        mask["readout"] = jax.tree.map(lambda w: np.ones_like(w), mask["readout"])
    if num_fidelities > 1:
        for path, key in _onehot_weights(params, config):
            _get(mask, path)[key][:num_fidelities] = 1.0
    return mask


def _thaw(tree: Any) -> Any:
    """A nested copy of a params tree with plain, mutable dicts."""
    if hasattr(tree, "items"):
        return {k: _thaw(v) for k, v in tree.items()}
    return tree


def append_fidelity(
    variables: Variables,
    config: ModelConfig,
    old_fidelities: Sequence[str],
    new_name: str,
    *,
    e0_row: Any,
) -> tuple[Variables, tuple[str, ...]]:
    """Add a fidelity to trained variables without changing old-fidelity predictions (SPEC §3).

    Conditioning mode: every conditioned linear gains zero-initialised one-hot rows (one new row;
    two when going from 1 to 2 fidelities, since a one-fidelity model has no one-hot), and all its
    existing 0e weights are multiplied by sqrt(fan_in_new / fan_in_old) so that e3nn's forward
    normalisation 1/sqrt(fan_in) leaves their contribution unchanged. Heads mode: the new head is
    a copy of the first fidelity's head. With ``fidelity_embedding`` the node embedding gains one-hot
    rows as the conditioned linears do (any mode); ``fidelity_scale`` gains a copy of the first
    fidelity's row. E0 gains the row ``e0_row`` [S] (required: fit it on the new
    fidelity's data, e.g. ``mfjax.data.statistics.fit_e0``; a zero row would be hundreds of eV/atom
    off for all-electron energies).
    Returns (new variables, new fidelities); build the module with the new fidelities.
    """
    old = tuple(old_fidelities)
    if new_name in old:
        raise ValueError(f"fidelity {new_name!r} already exists in {old}")
    n_old = len(old)
    params = _thaw(variables["params"])
    # host-side (numpy) surgery: no XLA compilation per weight shape
    if config.fidelity_mode == "heads":
        readout = params["readout"]
        for layer in readout.values():
            for key, w in layer.items():
                w = np.asarray(w)
                layer[key] = jnp.asarray(np.concatenate([w, w[:1]], axis=0))
    if config.fidelity_scale:
        s = np.asarray(params["fidelity_scale"])
        params["fidelity_scale"] = jnp.asarray(np.concatenate([s, s[:1]], axis=0))
    added = 2 if n_old == 1 else 1
    for path, key in _onehot_weights(params, config):
        module = _get(params, path)
        w = np.asarray(module.pop(key))
        i_in, i_out, fan_old, mul_out = _SCALAR_WEIGHT.match(key).groups()
        fan_old = int(fan_old)
        fan_new = fan_old + added
        w = w * np.asarray(math.sqrt(fan_new / fan_old), w.dtype)
        at = 0 if n_old == 1 else n_old  # one-hot rows come first (layers.with_fidelity)
        w = np.concatenate([w[:at], np.zeros((added,) + w.shape[1:], w.dtype), w[at:]])
        module[f"w[{i_in},{i_out}] {fan_new}x0e,{mul_out}x0e"] = jnp.asarray(w)
    e0 = np.asarray(variables["constants"]["e0"])
    if e0_row is None or np.shape(e0_row) != (e0.shape[1],):
        raise ValueError(f"append_fidelity: e0_row must be the new fidelity's E0 per species, shape ({e0.shape[1]},); "
                         f"got {None if e0_row is None else np.shape(e0_row)} (fit it with mfjax.data.statistics.fit_e0)")
    row = np.asarray(e0_row, e0.dtype)[None]
    constants = dict(variables["constants"], e0=jnp.asarray(np.concatenate([e0, row])))
    return {"params": params, "constants": constants}, old + (new_name,)


def model_summary(config: ModelConfig, species: Sequence[int], fidelities: Sequence[str]) -> str:
    """One line per block: output irreps and spherical-harmonics irreps (for logs)."""
    lines = [f"sh: {sh_irreps(config.lmax, config.parity)}; species {len(species)}; fidelities {list(fidelities)}"]
    for t, (irreps, filt) in enumerate(block_irreps(config)):
        lines.append(f"block {t}: -> {irreps} (messages {', '.join(map(str, filt))})")
    return "\n".join(lines)
