"""E0 per fidelity, force-RMS scale and the mean neighbour count."""

from __future__ import annotations

import numpy as np
import pytest

from mfjax.data.neighbors import neighbor_list
from mfjax.data.report import DataWarning
from mfjax.data.statistics import avg_num_neighbors, element_counts, fit_e0, force_rms
from mfjax.data.structures import Structure


def _structure(species, fidelity, energy=None, forces=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(species)
    return Structure(
        species=np.asarray(species), positions=rng.uniform(0, 6, (n, 3)), cell=np.eye(3) * 6.0,
        pbc=np.ones(3, bool), fidelity=fidelity, energy=energy, forces=forces,
    )


def test_e0_recovered_per_fidelity():
    species = (1, 6, 8)
    true = {"pbe": np.array([-3.4, -9.2, -4.9]), "r2scan": np.array([-1.1, -150.0, -430.0])}
    rng = np.random.default_rng(0)
    structures = []
    for k in range(60):
        counts = rng.integers(0, 6, size=3)
        counts[k % 3] += 1
        symbols = np.repeat(species, counts)
        for fid, e0 in true.items():
            if fid == "r2scan" and k % 4:  # fewer high-fidelity frames
                continue
            energy = float(counts @ e0) + rng.normal(0, 1e-3)
            structures.append(_structure(symbols, fid, energy=energy, seed=k))
    structures.append(_structure([1, 1], "pbe", energy=None))  # no energy label: ignored
    e0 = fit_e0(structures, species, ("pbe", "r2scan"), alpha=1e-6)
    np.testing.assert_allclose(e0[0], true["pbe"], atol=1e-2)
    np.testing.assert_allclose(e0[1], true["r2scan"], atol=1e-2)
    # alpha = 0.1 (the default) shrinks the 15 high-fidelity frames' fit a little
    np.testing.assert_allclose(fit_e0(structures, species, ("pbe", "r2scan")), e0, atol=0.5)


def test_e0_element_absent_from_a_fidelity_takes_the_anchor_with_warning():
    structures = [
        _structure([1, 8, 8], "pbe", energy=-13.0, seed=0),
        _structure([1, 1, 8], "pbe", energy=-11.0, seed=1),
        _structure([1, 1], "hf", energy=-2.0, seed=2),
    ]
    with pytest.warns(DataWarning, match="element\\(s\\) O absent from fidelity 'hf': their E0 is that of 'pbe'"):
        e0 = fit_e0(structures, (1, 8), ("pbe", "hf"))
    assert e0.shape == (2, 2) and e0[1, 1] == e0[0, 1] and e0[1, 0] == pytest.approx(-1.0, abs=0.05)
    with pytest.warns(DataWarning, match="element\\(s\\) H absent from fidelity 'pbe': their E0 is 0"):
        fit_e0([_structure([8], "pbe", energy=-4.0)] * 3 + [_structure([1], "hf", energy=-1.0)], (1, 8), ("pbe", "hf"))


def test_e0_few_high_fidelity_frames_shrink_towards_the_low_fidelity():
    """Two HF molecules for four elements (underdetermined): E0_hf = E0_lf + the least-norm correction,
    so HF energies of *other* molecules are off by the level shift, not by hundreds of eV."""
    species = (1, 6, 7, 8)
    lf = np.array([-13.6, -1030.0, -1480.0, -2040.0])
    shift = np.array([-0.05, -0.4, -0.5, -0.6])  # HF - LF per element
    rng = np.random.default_rng(1)
    structures, tests = [], []
    for k in range(40):
        counts = rng.integers(1, 4, size=4)
        symbols = np.repeat(species, counts)
        structures.append(_structure(symbols, "pbe", energy=float(counts @ lf), seed=k))
        if k < 2:
            structures.append(_structure(symbols, "r2scan", energy=float(counts @ (lf + shift)), seed=k))
        else:
            tests.append(counts)
    e0 = fit_e0(structures, species, ("pbe", "r2scan"), alpha=1e-6)
    np.testing.assert_allclose(e0[0], lf, atol=1e-3)
    errors = [abs(c @ (e0[1] - lf - shift)) / c.sum() for c in tests]
    assert max(errors) < 0.3  # eV/atom; the old zero prior gave hundreds


def test_e0_prior_for_a_new_fidelity_from_few_frames():
    """Transfer learning and append refit E0 for the HF fidelity alone: with 2 frames for 4 elements
    the prior (the LF model's E0) makes it the LF E0 plus the least-norm correction."""
    species = (1, 6, 7, 8)
    lf = np.array([-13.6, -1030.0, -1480.0, -2040.0])
    shift = np.array([-0.05, -0.4, -0.5, -0.6])
    rng = np.random.default_rng(2)
    counts = [rng.integers(1, 4, size=4) for _ in range(30)]
    hf = [_structure(np.repeat(species, c), "r2scan", energy=float(c @ (lf + shift)), seed=k) for k, c in enumerate(counts[:2])]
    with_prior = fit_e0(hf, species, ("r2scan",), alpha=1e-6, prior=lf)[0]
    without = fit_e0(hf, species, ("r2scan",), alpha=1e-6)[0]
    error = lambda e0: max(abs(c @ (e0 - lf - shift)) / c.sum() for c in counts[2:])  # noqa: E731
    assert error(with_prior) < 0.3 < 100 < error(without)  # eV/atom
    for c, s in zip(counts[:2], hf):  # both fit the two frames themselves
        assert c @ with_prior == pytest.approx(s.energy, abs=1e-3)
    # an element the frames lack takes the prior
    with pytest.warns(DataWarning, match="absent from fidelity 'r2scan': their E0 is the prior"):
        e0 = fit_e0([_structure([1, 6], "r2scan", energy=-1043.9)], species, ("r2scan",), alpha=1e-6, prior=lf)
    np.testing.assert_allclose(e0[0, 2:], lf[2:])


def test_element_counts():
    counts = element_counts([_structure([8, 1, 1], "x"), _structure([6], "x")], (1, 6, 8))
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 1, 0]])


def test_force_rms_pooled_over_fidelities():
    f1, f2 = np.full((2, 3), 1.0), np.full((1, 3), 4.0)
    structures = [_structure([1, 1], "a", forces=f1), _structure([1], "b", forces=f2), _structure([1], "a")]
    assert force_rms(structures) == pytest.approx(np.sqrt((6 * 1.0 + 3 * 16.0) / 9))


def test_avg_num_neighbors_matches_edge_count():
    structures = [_structure([1] * 5, "a", seed=s) for s in range(3)]
    edges = sum(len(neighbor_list(s.positions, s.cell, s.pbc, 3.0).senders) for s in structures)
    assert avg_num_neighbors(structures, 3.0) == pytest.approx(edges / 15)
