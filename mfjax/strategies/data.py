"""The data every strategy of an ablation shares: splits, HF subsets, the HF test regions.

``prepare_data`` loads the config's datasets once (``load_data``: structure_id-aware split, so a
geometry labelled at both fidelities lands in the same split) and derives:

* LF train/valid/test: the low-fidelity frames of each split;
* HF train pool/valid/test: the high-fidelity frames of each split *outside* every test region
  (the HF test is the "covered" region; a dataset with ``role: test`` adds its frames to it);
* HF regions (``ablation.regions``): per named region, every high-fidelity frame with
  ``info[key] == value``, from any split — never trained on, each its own test set (e.g. high
  temperatures only the LF data covers, or molecules with no HF training data);
* ``hf_subset(fraction, seed)``: the first round(fraction x pool) frames of a seeded permutation of the
  pool (nested: a smaller fraction is a subset of a larger one for the same seed), whose head is
  species-covering: greedy set cover in permutation order moves to the front the fewest frames
  (typically 1-3) that hold every element of the pool, so even a 1 % subset fits an E0 for every
  element (a random 2-frame subset without N gives E0_N = 0: errors of ~200 eV/atom on N-containing
  test molecules, a sampling artefact rather than a property of the strategy);
* one batch budget, mean neighbour count and stress flag for every run (so runs compile once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mfjax.config import Config
from mfjax.data.batching import BatchBudget, run_budget
from mfjax.data.dataset import LoadedData, load_data, match_pairs
from mfjax.data.statistics import avg_num_neighbors
from mfjax.data.structures import Structure
from mfjax.errors import ConfigError, DataError
from mfjax.strategies.settings import AblationSettings

__all__ = ["AblationData", "prepare_data", "low_partners", "region_of", "species_covering_order"]


@dataclass
class AblationData:
    """Shared structures and constants of one ablation (see the module docstring)."""

    low: str
    high: str
    species: tuple[int, ...]
    lf_train: list[Structure]
    lf_valid: list[Structure]
    lf_test: list[Structure]
    hf_pool: list[Structure]
    hf_valid: list[Structure]
    hf_test: list[Structure]
    hf_regions: dict[str, list[Structure]]
    lf_all: list[Structure]
    avg_num_neighbors: float
    budget: BatchBudget
    compute_stress: bool
    min_hf_train: int = 1
    loaded: LoadedData | None = None

    def n_hf(self, fraction: float) -> int:
        """Number of HF training structures at ``fraction`` (at least ``min_hf_train``)."""
        return int(min(len(self.hf_pool), max(self.min_hf_train, round(fraction * len(self.hf_pool)))))

    def hf_subset(self, fraction: float, seed: int) -> list[Structure]:
        order = species_covering_order(self.hf_pool, np.random.default_rng([seed, 7919]).permutation(len(self.hf_pool)))
        return [self.hf_pool[k] for k in order[: self.n_hf(fraction)]]

    @property
    def hf_uncovered(self) -> list[Structure]:
        """Every HF frame of any test region (none of them is trained on)."""
        return [s for frames in self.hf_regions.values() for s in frames]

    def test_sets(self) -> dict[str, list[Structure]]:
        """{region: HF test frames}: "test" (the covered HF test split), then the named regions."""
        return {"test": self.hf_test, **self.hf_regions}

    def summary(self) -> str:
        regions = "".join(f", {name} {len(frames)}" for name, frames in self.hf_regions.items())
        return (
            f"low {self.low!r}: train {len(self.lf_train)}, valid {len(self.lf_valid)}, test {len(self.lf_test)}; "
            f"high {self.high!r}: train pool {len(self.hf_pool)}, valid {len(self.hf_valid)}, test {len(self.hf_test)}"
            f"{regions}; species {list(self.species)}; "
            f"mean neighbours {self.avg_num_neighbors:.2f}; batch budget {self.budget}"
        )


def species_covering_order(structures: Sequence[Structure], order: Sequence[int]) -> list[int]:
    """``order`` (a permutation of indices into ``structures``) with a species-covering head: greedy
    set cover — repeatedly the first frame in ``order`` that adds the most elements not yet covered —
    then the remaining frames in their ``order``."""
    order = [int(k) for k in order]
    elements = [set(np.unique(structures[k].species).tolist()) for k in range(len(structures))]
    missing = set().union(*elements) if elements else set()
    head: list[int] = []
    while missing:
        best = max((k for k in order if k not in head), key=lambda k: len(elements[k] & missing))
        head.append(best)
        missing -= elements[best]
    chosen = set(head)
    return head + [k for k in order if k not in chosen]


def region_of(s: Structure, settings: AblationSettings) -> str | None:
    """The name of the first ``ablation.regions`` entry ``s`` belongs to, or None (covered)."""
    for name, region in settings.regions.items():
        if str(s.info.get(region.key, "")) == region.value:
            return name
    return None


def prepare_data(cfg: Config, settings: AblationSettings, loaded: LoadedData | None = None) -> AblationData:
    """Load and split the data of ``cfg`` for an ablation (``loaded`` skips reading the files)."""
    loaded = load_data(cfg.data) if loaded is None else loaded
    fids = loaded.fidelities
    if len(fids) < 2 and (settings.low is None or settings.high is None):
        raise ConfigError(f"an ablation needs two fidelities; the data has {list(fids)}")
    low = settings.low if settings.low is not None else fids[0]
    high = settings.high if settings.high is not None else fids[1]
    for name in (low, high):
        if name not in fids:
            raise ConfigError(f"ablation fidelity {name!r} is not in the data (fidelities {list(fids)})")
    if low == high:
        raise ConfigError(f"ablation.low and ablation.high are both {low!r}")

    def pick(split: Sequence[Structure], name: str, covered: bool | None) -> list[Structure]:
        return [s for s in split if s.fidelity == name and (covered is None or (region_of(s, settings) is None) == covered)]

    everything = loaded.train + loaded.valid + loaded.test
    data_parts = dict(
        lf_train=pick(loaded.train, low, None), lf_valid=pick(loaded.valid, low, None), lf_test=pick(loaded.test, low, None),
        hf_pool=pick(loaded.train, high, True), hf_valid=pick(loaded.valid, high, True), hf_test=pick(loaded.test, high, True),
        hf_regions={name: [s for s in everything if s.fidelity == high and region_of(s, settings) == name]
                    for name in settings.regions},
    )
    if not data_parts["lf_train"] or not data_parts["hf_pool"]:
        raise DataError(
            f"an ablation needs low- and high-fidelity training data; got {len(data_parts['lf_train'])} {low!r} and "
            f"{len(data_parts['hf_pool'])} covered {high!r} training frames"
        )
    if not data_parts["hf_test"]:
        raise DataError(f"no {high!r} test frames: raise data.split.test")
    used = [s for s in everything if s.fidelity in (low, high)]
    train_all = data_parts["lf_train"] + data_parts["hf_pool"]
    b = cfg.train.batch
    budget = run_budget(used, cfg.data.cutoff, b.max_graphs, b.max_nodes, b.max_edges)
    stress = cfg.train.compute_stress
    if stress is None:
        stress = any(s.stress is not None for s in used)
    return AblationData(
        low=low, high=high, species=tuple(loaded.species), **data_parts,
        lf_all=[s for s in everything if s.fidelity == low],
        avg_num_neighbors=float(avg_num_neighbors(train_all, cfg.data.cutoff)), budget=budget,
        compute_stress=bool(stress), min_hf_train=settings.min_hf_train, loaded=loaded,
    )


def low_partners(data: AblationData, structures: Sequence[Structure]) -> list[Structure | None]:
    """The low-fidelity frame with the same structure_id (and geometry) of each HF structure, or None."""
    pairs = match_pairs(list(data.lf_all) + list(structures), data.low, data.high)
    by_id = {h.structure_id: l for l, h in pairs}
    return [by_id.get(s.structure_id) if s.structure_id is not None else None for s in structures]
