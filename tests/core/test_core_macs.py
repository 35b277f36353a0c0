import numpy as np
import pytest
import torch

from dm3d_exp.core.levels import level_counts
from dm3d_exp.core.macs import LayerCost, level_costs, prefix_macs, prunable_budget, summarize_macs
from dm3d_exp.core.ranking import magnitude_order, mask_from_order


def make_layer(seed, taps=5, cout=3, cin=4):
    rng = np.random.default_rng(seed)
    cost = LayerCost("conv", rng.uniform(0, 50, taps), cout, cin)
    w = torch.randn(taps, cout, cin, generator=torch.Generator().manual_seed(seed))
    return cost, w


def brute_macs(cost, mask):
    """sum over every kept weight of the pairs of its tap (explicit loops)."""
    total = 0.0
    for j in range(mask.shape[0]):
        for o in range(mask.shape[1]):
            for i in range(mask.shape[2]):
                total += cost.pairs[j] * bool(mask[j, o, i])
    return total


def test_dense_and_pruned_macs_match_explicit_counting():
    cost, w = make_layer(0)
    full = torch.ones(cost.shape, dtype=torch.bool)
    assert cost.dense_macs == pytest.approx(brute_macs(cost, full))
    mask = torch.rand(cost.shape, generator=torch.Generator().manual_seed(3)) > 0.4
    assert cost.pruned_macs(mask) == pytest.approx(brute_macs(cost, mask))
    assert cost.pruned_macs(mask.numpy()) == pytest.approx(brute_macs(cost, mask))
    assert cost.pruned_macs(mask, mode="density") == pytest.approx(cost.dense_macs * mask.float().mean().item())


def test_conv2d_pairs_give_the_textbook_macs():
    # Conv2d 3x3, Cin 4 -> Cout 8, 10x12 output: H_out*W_out*Cout*Cin*kh*kw
    cost = LayerCost("c2d", np.full(9, 10 * 12), cout=8, cin=4, kernel_size=(3, 3))
    assert cost.dense_macs == 10 * 12 * 8 * 4 * 3 * 3


def test_level_costs_agree_with_masks_at_every_level():
    cost, w = make_layer(1)
    order = magnitude_order(w)
    for mode in ("tap_aware", "density"):
        curve = level_costs(cost, order, 7, mode=mode)
        for k, m in enumerate(level_counts(7, cost.numel)):
            assert curve[k] == pytest.approx(cost.pruned_macs(mask_from_order(order, cost.shape, m), mode=mode))
    prefix = prefix_macs(cost, order)
    assert prefix[-1] == 0.0 and np.all(np.diff(prefix) <= 0)


def test_budget_and_summary_for_both_denominators():
    costs = [LayerCost("a", [10.0, 20.0], 2, 3), LayerCost("b", [5.0], 4, 4)]
    dense = 30 * 6 + 5 * 16
    assert prunable_budget(costs, 100.0, 0.5) == pytest.approx(0.5 * (dense + 100) - 100)
    assert prunable_budget(costs, 100.0, 0.5, denominator="prunable") == pytest.approx(0.5 * dense)
    summary = summarize_macs(costs, [90.0, 40.0], 100.0)
    assert summary.ratio_whole == pytest.approx(230 / (dense + 100))
    assert summary.ratio_prunable == pytest.approx(130 / dense)
    d = summary.as_dict()
    assert d["flops_pruned_whole"] == pytest.approx(2 * 230) and d["macs_dense_prunable"] == dense


def test_bad_values_raise():
    with pytest.raises(ValueError, match="pairs"):
        LayerCost("x", [-1.0], 1, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        LayerCost("x", [1.0] * 9, 1, 1, kernel_size=(3, 2))
    costs = [LayerCost("a", [1.0], 1, 1)]
    with pytest.raises(ValueError, match="non-prunable"):
        prunable_budget(costs, 100.0, 0.5)
    with pytest.raises(ValueError, match="target"):
        prunable_budget(costs, 0.0, 1.5)
    with pytest.raises(ValueError, match="mask shape"):
        costs[0].pruned_macs(torch.ones(2, 1, 1, dtype=torch.bool))
