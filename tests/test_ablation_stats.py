"""``mfjax.strategies.stats``: hierarchical bootstrap intervals against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mfjax.strategies.stats import hierarchical_bootstrap, paired_difference, verdict, weighted_means


def _errors(rng, n_seeds: int, n: int, scale: float = 1.0) -> np.ndarray:
    """Positive per-structure errors [S, N] with a per-seed offset (seed-to-seed variation)."""
    return np.abs(rng.normal(5.0, 2.0, (n_seeds, n))) * scale + rng.normal(0.0, 0.3, (n_seeds, 1))


def test_weighted_means_is_the_component_mae():
    values = np.array([[1.0, 3.0], [2.0, 2.0]])  # [S=2, N=2]
    weights = np.array([3.0, 1.0])  # force components per structure
    np.testing.assert_allclose(weighted_means(values, weights), [1.5, 2.0])


def test_identical_strategies_give_an_interval_around_zero():
    rng = np.random.default_rng(1)
    a = _errors(rng, 3, 100)
    same = paired_difference(a, a.copy(), samples=500, seed=0)
    assert same.mean == same.low == same.high == 0.0 and verdict(same, "mf") == "tie"
    # two strategies drawn from one distribution: the 95 % interval contains 0 about 95 % of the time
    ties = [verdict(paired_difference(_errors(rng, 3, 100), _errors(rng, 3, 100), samples=400, seed=k), "mf") == "tie"
            for k in range(60)]
    assert np.mean(ties) >= 0.85
    diff = paired_difference(a, _errors(rng, 3, 100), samples=400, seed=0)
    assert diff.n_seeds == 3 and diff.n_structures == 100


def test_a_constant_shift_gives_an_interval_around_the_shift():
    rng = np.random.default_rng(3)
    b = _errors(rng, 3, 200)
    a = b - 0.8 + rng.normal(0.0, 0.2, b.shape)  # a is better by 0.8 on average
    diff = paired_difference(a, b, samples=2000, seed=0)
    assert diff.low < -0.8 < diff.high and diff.high < 0.0
    assert abs(diff.mean + 0.8) < 0.05
    assert verdict(diff, "multi_fidelity") == "multi_fidelity better"
    worse = paired_difference(b, a, samples=2000, seed=0)
    assert verdict(worse, "multi_fidelity") == "multi_fidelity worse"
    np.testing.assert_allclose([worse.low, worse.high], [-diff.high, -diff.low], atol=0.1)


def test_resolution_shrinks_with_the_number_of_structures():
    rng = np.random.default_rng(4)
    widths = []
    for n in (25, 400):
        d = rng.normal(0.0, 1.0, (3, n))
        iv = hierarchical_bootstrap(d, samples=2000, seed=0)
        widths.append(iv.high - iv.low)
    assert 2.5 < widths[0] / widths[1] < 6.5  # ~ sqrt(16) = 4


def test_seed_to_seed_spread_widens_the_interval():
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 1.0, (3, 100))
    calm = hierarchical_bootstrap(noise, samples=2000, seed=0)
    spread = hierarchical_bootstrap(noise + np.array([[-3.0], [0.0], [3.0]]), samples=2000, seed=0)
    assert (spread.high - spread.low) > 3 * (calm.high - calm.low)


def test_bootstrap_is_reproducible_and_checks_shapes():
    rng = np.random.default_rng(6)
    d = rng.normal(size=(2, 30))
    assert hierarchical_bootstrap(d, samples=300, seed=7) == hierarchical_bootstrap(d, samples=300, seed=7)
    with pytest.raises(ValueError, match="weights"):
        hierarchical_bootstrap(d, np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        hierarchical_bootstrap(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="same"):
        paired_difference(d, d[:1])
