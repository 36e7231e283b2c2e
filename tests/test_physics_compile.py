"""Batches of varied real sizes padded to one budget compile ``predict`` exactly once (float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.nn.model import Potential, init_variables
from mfjax.physics import predict
from test_physics_model import CUTOFF, FIDELITIES, SPECIES, molecule, tiny_config, triclinic


def test_one_compilation_for_batches_of_varied_sizes():
    assert not jax.config.jax_enable_x64
    module = Potential(tiny_config(), SPECIES, tuple(FIDELITIES), avg_num_neighbors=4.0)
    budget = (30, 260, 4)
    batches = [[molecule()], [triclinic()], [molecule(), triclinic()], [triclinic(), molecule(), triclinic()]]
    graphs = [
        jax.tree.map(jnp.asarray, pad_graph(structures_to_graph(b, CUTOFF, FIDELITIES), *budget))
        for b in batches
    ]
    real_sizes = {
        (int(g.n_node[g.globals.graph_mask].sum()), int(g.n_edge[g.globals.graph_mask].sum())) for g in graphs
    }
    assert len(real_sizes) == 4
    variables = init_variables(module, jax.random.PRNGKey(0), graphs[0])

    traces = []

    def counted_apply(v, graph, vectors):
        traces.append(1)  # runs only while jax traces
        return module.apply(v, graph, vectors)

    step = jax.jit(lambda v, g: predict(counted_apply, v, g))
    outputs = [jax.tree.map(np.asarray, step(variables, g)) for g in graphs]
    assert len(traces) == 1
    assert step._cache_size() == 1
    for out, batch in zip(outputs, batches):
        assert out["energy"].dtype == np.float32
        assert np.all(np.isfinite(out["forces"])) and np.all(out["energy"][: len(batch)] != 0.0)
    # the same structure gives the same prediction in every batch it appears in (float32)
    np.testing.assert_allclose(outputs[2]["energy"][1], outputs[1]["energy"][0], rtol=1e-5)
    np.testing.assert_allclose(outputs[3]["energy"][1], outputs[0]["energy"][0], rtol=1e-5)
