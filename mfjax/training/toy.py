"""A tiny analytic-ish potential with the ``Potential`` contract, for tests and smoke runs.

``ToyPotential.apply(variables, graph, edge_vectors) -> [N]`` atomic energies: a Morse-like pair
term with trainable depth/range per fidelity plus ``E0[fidelity, species]`` (constants); exactly 0
on padding nodes. ``toy_predict`` mirrors ``mfjax.physics.predict`` (forces = -dE/dR, stress =
(1/V) dE/d(strain)) so training code can be tested without the equivariant model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.graph import Graph, edge_vectors, node_graph_index, node_mask, num_graphs, num_nodes, volume


class ToyPotential:
    def __init__(self, species: tuple[int, ...], fidelities: tuple[str, ...], cutoff: float = 4.0):
        self.species = tuple(species)
        self.fidelities = tuple(fidelities)
        self.cutoff = cutoff
        table = np.zeros(119, np.int32)
        table[list(self.species)] = np.arange(len(self.species))
        self.index_of_z = table

    def init(self, rng: jax.Array, e0: np.ndarray | None = None) -> dict:
        nf, ns = len(self.fidelities), len(self.species)
        k1, k2 = jax.random.split(rng)
        params = {
            "depth": 0.1 + 0.01 * jax.random.normal(k1, (nf, ns)),
            "range": 1.0 + 0.01 * jax.random.normal(k2, (nf,)),
            "r0": jnp.full((ns,), 1.5),
        }
        e0 = np.zeros((nf, ns)) if e0 is None else np.asarray(e0)
        return {"params": params, "constants": {"e0": jnp.asarray(e0, jnp.float32), "scale": jnp.ones(())}}

    def apply(self, variables: dict, graph: Graph, edge_vectors: jax.Array) -> jax.Array:
        p, c = variables["params"], variables["constants"]
        dtype = edge_vectors.dtype
        sidx = jnp.asarray(self.index_of_z)[graph.nodes.species]
        node_graph = node_graph_index(graph)
        fid = graph.globals.fidelity[node_graph]
        r2 = jnp.sum(edge_vectors**2, -1)
        real = r2 > 1e-12
        r = jnp.sqrt(jnp.where(real, r2, 1.0))
        env = jnp.where(real & (r < self.cutoff), (1.0 - (r / self.cutoff) ** 2) ** 2, 0.0)
        recv = graph.receivers
        x = jnp.exp(-p["range"][fid[recv]] * (r - p["r0"][sidx[recv]]))
        pair = p["depth"][fid[recv], sidx[recv]] * (x**2 - 2.0 * x) * env
        e = 0.5 * jax.ops.segment_sum(pair.astype(dtype), recv, num_segments=num_nodes(graph))
        e = c["scale"].astype(dtype) * e + c["e0"].astype(dtype)[fid, sidx]
        return jnp.where(node_mask(graph), e, 0.0)


def toy_predict(apply_fn, variables, graph: Graph, *, compute_stress: bool = True) -> dict:
    """Energy [G], forces [N, 3], stress [G, 3, 3] (ASE sign) by one ``jax.grad`` (physics stand-in)."""
    pos = graph.nodes.positions
    strain = jnp.zeros((num_graphs(graph), 3, 3), pos.dtype)

    def total(pos, strain):
        vectors = edge_vectors(graph, positions=pos, strain=strain)
        atomic = apply_fn(variables, graph, vectors)
        energy = jax.ops.segment_sum(atomic, node_graph_index(graph), num_segments=num_graphs(graph))
        return energy.sum(), energy

    (_, energy), (g_pos, g_strain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(pos, strain)
    out = {"energy": energy, "forces": -g_pos}
    if compute_stress:
        vol = volume(graph)
        out["stress"] = jnp.where(vol[:, None, None] > 0, g_strain / jnp.where(vol > 0, vol, 1.0)[:, None, None], 0.0)
    return out


def synthetic_atoms(n: int, fidelity: str, seed: int = 0, periodic_every: int = 3, sigma_scale: float = 1.0):
    """``n`` small labelled ``ase.Atoms`` (Lennard-Jones Ar/Cu-like clusters and cells) for tests.

    Labels come from ASE's LennardJones; ``sigma_scale`` changes the "level of theory" so two calls
    with different scales give two consistent fidelities. Every ``periodic_every``-th frame is a
    periodic cell with a stress label.
    """
    import ase
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        periodic = periodic_every > 0 and k % periodic_every == 0
        n_atoms = int(rng.integers(3, 7))
        if periodic:
            grid = np.array([[i, j, l] for i in range(2) for j in range(2) for l in range(2)], float)[:n_atoms]
            pos = grid * 2.2 + rng.normal(0, 0.08, (n_atoms, 3))
            atoms = ase.Atoms(numbers=rng.choice([18, 29], n_atoms), positions=pos, cell=np.eye(3) * 4.4, pbc=True)
        else:
            pos = np.array([[2.1 * i, 0.6 * (i % 2), 0.3 * rng.normal()] for i in range(n_atoms)])
            atoms = ase.Atoms(numbers=rng.choice([18, 29], n_atoms), positions=pos + rng.normal(0, 0.05, pos.shape))
        calc = LennardJones(sigma=2.0 * sigma_scale, epsilon=0.05, rc=3.9, smooth=True)
        atoms.calc = calc
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if periodic:
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["fidelity"] = fidelity
        frames.append(atoms)
    return frames


def to_structures(frames) -> list:
    """``ase.Atoms`` with calculator labels and ``info["fidelity"]`` -> ``Structure`` list."""
    from mfjax.data.structures import structure_from_atoms
    from ase.stress import voigt_6_to_full_3x3_stress

    out = []
    for i, atoms in enumerate(frames):
        res = atoms.calc.results if atoms.calc is not None else {}
        out.append(structure_from_atoms(
            atoms, atoms.info["fidelity"], energy=res.get("energy"), forces=res.get("forces"),
            stress=None if "stress" not in res else voigt_6_to_full_3x3_stress(res["stress"]), index=i,
        ))
    return out


def toy_builder(cfg, data, example, seed: int):
    """``model_builder`` for ``train``/``setup_run``: a ``ToyPotential`` with fitted E0 (tests)."""
    from mfjax.data.statistics import fit_e0
    from mfjax.training.setup import ModelBundle

    model = ToyPotential(tuple(data.species), tuple(data.fidelities), cutoff=cfg.data.cutoff)
    e0 = fit_e0(data.train, data.species, data.fidelities, alpha=cfg.train.e0_alpha)
    return ModelBundle(
        apply_fn=model.apply, variables=model.init(jax.random.PRNGKey(seed), e0), species=tuple(data.species),
        fidelities=tuple(data.fidelities), avg_num_neighbors=1.0, statistics={}, exportable=False,
    )


def write_synthetic_dataset(directory, n_low: int = 40, n_high: int = 12, seed: int = 0) -> dict:
    """Write a two-fidelity LJ dataset (``lo.extxyz``, ``hi.extxyz``) and return a config dict for a
    tiny model that trains on it in seconds (tests, smoke runs)."""
    from pathlib import Path

    import ase.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ase.io.write(directory / "lo.extxyz", synthetic_atoms(n_low, "lo", seed))
    ase.io.write(directory / "hi.extxyz", synthetic_atoms(n_high, "hi", seed + 1, sigma_scale=1.05))
    return {
        "data": {
            "cutoff": 4.0,
            "datasets": [{"path": str(directory / "lo.extxyz"), "fidelity": "lo"}, {"path": str(directory / "hi.extxyz")}],
            "split": {"valid": 0.2, "test": 0.2},
        },
        "model": {"preset": "small", "num_layers": 1, "hidden_irreps": "8x0e+4x1e", "lmax": 1, "radial_hidden": [8]},
        "train": {"epochs": 3, "batch": {"max_graphs": 4}, "loss": {"fidelity_weights": {"hi": 7.0}}, "ema": 0.99,
                  "checkpoint_every_steps": 3},
        "output": {"dir": str(directory / "run"), "progress": False},
    }
