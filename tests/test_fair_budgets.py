"""Fair budgets (issue 17): the HF share of the loss as a setting (weights derived from frame
counts), early stopping (``patience``) with the best weights kept, a learning-rate schedule that
continues over stages, and the equal-step ``ablation.budget``."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.synthetic import synthetic_config, synthetic_frames

from mfjax.config import load_config
from mfjax.data.batching import pad_graph, structures_to_graph
from mfjax.data.graph import num_edges, num_nodes
from mfjax.data.io import atoms_to_structure
from mfjax.errors import ConfigError
from mfjax.strategies.settings import Budget, load_ablation_config
from mfjax.training.fit import _weighted
from mfjax.training.loss import LossSettings, loss_sums, resolve_fidelity_weights, share_weights
from mfjax.training.optim import make_optimizer, make_schedule


@pytest.mark.parametrize("n_lf,n_hf", [(1000, 10), (822, 142), (100, 100), (60, 3)])
def test_share_weights_give_the_share_whatever_the_ratio(n_lf, n_hf):
    w = share_weights({"pbe": n_lf, "r2scan": n_hf}, {"r2scan": 0.4})
    hf = w["r2scan"] * n_hf
    assert hf / (hf + w["pbe"] * n_lf) == pytest.approx(0.4)
    assert (hf + w["pbe"] * n_lf) / (n_lf + n_hf) == pytest.approx(1.0)  # mean weight 1: same loss scale


def test_unnamed_fidelities_share_the_rest_by_frame_counts():
    counts = {"a": 300, "b": 100, "hf": 20}
    w = share_weights(counts, {"hf": 0.5})
    assert w["a"] == w["b"]  # one common weight: shares in proportion to frames
    total = sum(w[f] * n for f, n in counts.items())
    assert [w[f] * counts[f] / total for f in ("a", "b", "hf")] == pytest.approx([0.375, 0.125, 0.5])
    # every fidelity named: the shares must sum to 1
    w = share_weights({"lo": 90, "hi": 10}, {"lo": 0.7, "hi": 0.3})
    assert w["hi"] * 10 / (w["hi"] * 10 + w["lo"] * 90) == pytest.approx(0.3)
    # one fidelity in the data (hf_only, transfer): nothing to share
    assert share_weights({"hi": 10, "lo": 0}, {"hi": 0.4}) == {"hi": 1.0, "lo": 1.0}


@pytest.mark.parametrize("counts,share,message", [
    ({"pbe": 10, "r2scan": 5}, {"r2scn": 0.4}, "unknown fidelities"),
    ({"pbe": 10, "r2scan": 0, "x": 3}, {"r2scan": 0.4}, "no training frames"),
    ({"pbe": 10, "r2scan": 5, "x": 3}, {"pbe": 0.5, "r2scan": 0.5}, "leaving nothing"),
    ({"pbe": 10, "r2scan": 5}, {"pbe": 0.5, "r2scan": 0.4}, "must sum to 1"),
])
def test_share_weights_errors(counts, share, message):
    with pytest.raises(ConfigError, match=message):
        share_weights(counts, share)


@pytest.mark.parametrize("loss,message", [
    ({"fidelity_weights": {"hi": 7.0}, "fidelity_share": {"hi": 0.4}}, "not both"),
    ({"fidelity_share": {"hi": 1.5}}, r"must be in \(0, 1\]"),
    ({"fidelity_share": {"hi": 0.6, "lo": 0.6}}, "sum to 1.2 > 1"),
])
def test_loss_config_rejects_bad_shares(loss, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data={"data": {"datasets": [{"path": "x.extxyz"}]}, "train": {"loss": loss}})


def test_weights_on_structures_equal_weights_in_the_loss():
    """fit scales the structures' label weights (one compiled step for every weight): the loss sums
    equal those of the per-fidelity weight vector of the step."""
    frames = synthetic_frames(4, "low", 0) + synthetic_frames(3, "high", 1)
    structures = [atoms_to_structure(a, source="syn", frame=k)[0] for k, a in enumerate(frames)]
    fids = ("low", "high")
    cfg = load_config(data={"data": {"datasets": [{"path": "x"}]}, "train": {"loss": {"fidelity_share": {"high": 0.4}}}})
    weights, how = resolve_fidelity_weights(cfg.train.loss, fids, structures)
    assert weights["high"] == pytest.approx(0.4 * 7 / 3) and "high 0.9333 (3 frames)" in how
    vector = np.array([weights[f] for f in fids], np.float32)

    def sums(ss, fw):
        graph = structures_to_graph(ss, 4.0, {f: k for k, f in enumerate(fids)})
        graph = pad_graph(graph, num_nodes(graph) + 1, num_edges(graph) + 1, len(ss) + 1)
        rng = np.random.default_rng(0)
        pred = {"energy": graph.globals.energy + rng.normal(size=graph.globals.energy.shape),
                "forces": graph.nodes.forces + rng.normal(size=graph.nodes.forces.shape)}
        return loss_sums(jax.tree.map(lambda x: np.asarray(x, np.float32), pred), graph, np.asarray(fw), LossSettings())

    baked = sums(structures, vector)
    moved = sums(_weighted(structures, fids, vector), np.ones(2, np.float32))
    for key in baked:
        np.testing.assert_allclose(moved[key], baked[key], rtol=1e-6)


def test_schedule_can_continue_from_a_start_step():
    class Train:
        lr, lr_final, schedule, warmup_steps, grad_clip, optimizer = 0.01, 1e-4, "linear", 0, None, "adam"

    params = {"w": np.ones(3, np.float32)}
    optimizer, _ = make_optimizer(Train, 90, start_step=60)
    updates, _ = optimizer.update({"w": np.ones(3, np.float32)}, optimizer.init(params), params)
    first_lr = -float(updates["w"][0]) / 1.0  # Adam's first normalised update is 1 per element
    assert first_lr == pytest.approx(float(make_schedule(0.01, 1e-4, 90)(60)), rel=1e-3)
    with pytest.raises(ValueError, match="start_step"):
        make_optimizer(Train, 90, start_step=91)


def test_budget_stages_give_every_strategy_the_same_total():
    b = Budget(total_steps=900, pretrain_steps=600)
    scratch, pre, cont, delta = (b.stage(k) for k in ("scratch", "pretrain", "continue", "delta"))
    assert scratch[0] == pre[0] + cont[0] == pre[0] + delta[0] == 900
    # continued: the pre-training and the second stage are the two halves of one decay over 900 steps
    assert (pre[1], cont[1], delta[1]) == ((0, 900), (600, 900), (0, 300))
    per_stage = Budget(total_steps=900, pretrain_steps=600, schedule="per_stage")
    assert (per_stage.stage("pretrain")[1], per_stage.stage("continue")[1]) == ((0, 600), (0, 300))


def test_old_steps_section_is_one_line_naming_the_budget(tmp_path):
    raw = synthetic_config(tmp_path)
    raw["ablation"]["steps"] = {"pretrain": 600, "hf": 300, "joint": 900, "append": 300}
    with pytest.raises(ConfigError, match=r"ablation.steps was replaced by ablation.budget") as info:
        load_ablation_config(None, data=raw)
    assert "\n" not in str(info.value)
    raw["ablation"].pop("steps")
    raw["ablation"]["budget"] = {"total_steps": 5, "pretrain_steps": 5}
    with pytest.raises(ConfigError, match="pretrain_steps < total_steps"):
        load_ablation_config(None, data=raw)


def test_repeats_realise_the_same_weights_with_repeated_structures():
    """fidelity_weighting: repeats: a fidelity of weight w > 1 comes round(w) times with weight
    w / round(w): the same total weight per fidelity, so the same expected share of the loss."""
    frames = synthetic_frames(5, "low", 0) + synthetic_frames(2, "high", 1)
    structures = [atoms_to_structure(a, source="syn", frame=k)[0] for k, a in enumerate(frames)]
    fids = ("low", "high")
    vector = np.array([0.8, 6.6], np.float32)
    weighted = _weighted(structures, fids, vector)
    repeated = _weighted(structures, fids, vector, repeats=True)
    assert len(weighted) == 7 and len(repeated) == 5 + 2 * 7  # round(6.6) = 7 copies of each HF frame

    def total(ss, fid):
        return sum(s.weight[1] for s in ss if s.fidelity == fid)

    for fid in fids:
        assert total(repeated, fid) == pytest.approx(total(weighted, fid), rel=1e-6)
    assert [s.weight[1] for s in repeated if s.fidelity == "high"] == pytest.approx([6.6 / 7] * 14, rel=1e-6)
    cfg = load_config(data={"data": {"datasets": [{"path": "x"}]},
                            "train": {"loss": {"fidelity_share": {"high": 0.4}, "fidelity_weighting": "repeats"}}})
    assert cfg.train.loss.fidelity_weighting == "repeats"
