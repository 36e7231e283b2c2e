"""Fidelity conditioning (SPEC §3): the fidelity changes the energy only through the conditioned
linears (one-hot rows) and E0; heads mode differs only in the readout; one fidelity patches
nothing; ``append_fidelity`` keeps old-fidelity predictions (float64)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.nn.model import (
    Potential,
    append_fidelity,
    count_parameters,
    fidelity_weight_mask,
    init_variables,
)
from test_physics_model import CUTOFF, SPECIES, molecule, tiny_config, triclinic
from mfjax.data.graph import edge_vectors, node_graph_index, num_graphs

E0 = np.array([[-1.0, -2.0, -3.0, -4.0], [-1.5, -2.5, -3.5, -4.5], [0.3, 0.2, 0.1, 0.0]])


@pytest.fixture(scope="module")
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def graph_all_fidelities(n_fid: int):
    """Molecule and triclinic cell, each labelled with every fidelity 0..n_fid-1 (one batch)."""
    names = {f"f{i}": i for i in range(3)}
    structures = [dataclasses.replace(make(), fidelity=f"f{i}") for make in (molecule, triclinic) for i in range(n_fid)]
    graph = structures_to_graph(structures, CUTOFF, names)
    return jax.tree.map(jnp.asarray, pad_graph(graph, 40, 400, 7))


_JITTED = {}


def energies(module, variables, n_fid) -> np.ndarray:
    """[2, n_fid] total energies of (molecule, cell) x fidelity (one compilation per model)."""
    graph = graph_all_fidelities(n_fid)
    key = (module.config, module.fidelities)
    apply = _JITTED.setdefault(key, jax.jit(module.apply))
    atomic = apply(variables, graph, edge_vectors(graph))
    per_graph = jax.ops.segment_sum(atomic, node_graph_index(graph), num_graphs(graph))
    return np.asarray(per_graph[: 2 * n_fid]).reshape(2, n_fid)


def e0_sum(e0: np.ndarray) -> np.ndarray:
    """[2, F] sum_i E0[f, species_i] for (molecule, cell)."""
    index = {z: i for i, z in enumerate(SPECIES)}
    counts = [np.bincount([index[z] for z in make().species], minlength=len(SPECIES)) for make in (molecule, triclinic)]
    return np.stack([e0 @ c for c in counts])


def config(mode: str = "conditioning"):
    """2 layers, l_max 1: gates in block 0, scalars only in block 1; quick to compile."""
    return tiny_config(fidelity_mode=mode, hidden_irreps="4x0e+2x1o", lmax=1)


def build(n_fid: int, mode: str = "conditioning", seed: int = 0):
    module = Potential(config(mode), SPECIES, tuple(f"f{i}" for i in range(n_fid)), 4.0)
    variables = init_variables(module, jax.random.PRNGKey(seed), graph_all_fidelities(n_fid), e0=E0[:n_fid])
    return module, variables


def test_fidelity_enters_only_through_onehot_rows_and_e0(x64):
    module, variables = build(2)
    e = energies(module, variables, 2)
    assert np.all(np.abs(np.diff(e, axis=1) - np.diff(e0_sum(E0[:2]), axis=1)) > 1e-4)
    mask = fidelity_weight_mask(variables["params"], module.config, 2)
    assert sum(int(m.sum()) for m in jax.tree.leaves(mask)) == 2 * 20  # see the count test
    zeroed = jax.tree.map(lambda p, m: np.asarray(p) * (1 - m), variables["params"], mask)
    e = energies(module, {**variables, "params": zeroed}, 2)
    np.testing.assert_allclose(np.diff(e, axis=1), np.diff(e0_sum(E0[:2]), axis=1), atol=1e-10)


def test_one_fidelity_patches_nothing_and_onehot_adds_one_row_per_fidelity(x64):
    def count(n_fid, mode="conditioning"):
        module = Potential(config(mode), SPECIES, tuple(f"f{i}" for i in range(n_fid)), 4.0)
        g = graph_all_fidelities(n_fid)
        return count_parameters(jax.eval_shape(module.init, jax.random.PRNGKey(0), g, edge_vectors(g))["params"])

    # conditioned 0e outputs: block 0 intro 4 + outro 6 (4 scalars + 2 gates), block 1 intro 4 +
    # outro 4, readout hidden 2 -> 20 extra weights per fidelity; none with a single fidelity.
    one = count(1)
    assert count(2) == one + 2 * 20 and count(3) == one + 3 * 20
    assert count(1, "heads") == one
    readout = 4 * 2 + 2 * 1
    assert count(3, "heads") == one + 2 * readout


def test_heads_mode_differs_only_in_readout(x64):
    module, variables = build(2, "heads")
    e = energies(module, variables, 2)
    assert np.all(np.abs(np.diff(e, axis=1) - np.diff(e0_sum(E0[:2]), axis=1)) > 1e-4)
    same_heads = jax.tree.map(lambda w: np.stack([w[0], w[0]]), variables["params"]["readout"])
    params = {**variables["params"], "readout": same_heads}
    e = energies(module, {**variables, "params": params}, 2)
    np.testing.assert_allclose(np.diff(e, axis=1), np.diff(e0_sum(E0[:2]), axis=1), atol=1e-10)


@pytest.mark.parametrize("n_old,mode", [(1, "conditioning"), (2, "conditioning"), (1, "heads")])
def test_append_fidelity_keeps_old_predictions(x64, n_old, mode):
    module, variables = build(n_old, mode, seed=3)
    before = energies(module, variables, n_old)
    new_vars, names = append_fidelity(variables, module.config, module.fidelities, "f_new", e0_row=E0[2])
    assert names == module.fidelities + ("f_new",)
    new_module = Potential(module.config, SPECIES, names, module.avg_num_neighbors)
    g = graph_all_fidelities(n_old + 1)
    reference = jax.eval_shape(new_module.init, jax.random.PRNGKey(0), g, edge_vectors(g))["params"]
    assert jax.tree.structure(reference) == jax.tree.structure(new_vars["params"])
    assert jax.tree.map(jnp.shape, reference) == jax.tree.map(jnp.shape, new_vars["params"])
    after = energies(new_module, new_vars, n_old + 1)
    np.testing.assert_allclose(after[:, :n_old], before, atol=1e-6)
    np.testing.assert_allclose(new_vars["constants"]["e0"], np.concatenate([E0[:n_old], E0[2:]]))


def test_append_fidelity_requires_its_e0_row():
    """A zero E0 row would be hundreds of eV/atom off for all-electron energies: it must be given."""
    variables = {"params": {}, "constants": {"e0": np.zeros((1, 3)), "scale": np.float32(1.0)}}
    config = tiny_config()
    with pytest.raises(TypeError):
        append_fidelity(variables, config, ("lo",), "hi")  # the keyword is required
    with pytest.raises(ValueError, match="e0_row must be the new fidelity's E0 per species, shape \\(3,\\)"):
        append_fidelity(variables, config, ("lo",), "hi", e0_row=np.zeros(2))
