from fractions import Fraction
import math

import numpy as np
import pytest
import torch

from dm3d_exp.core.levels import level_counts, max_level, monotone_envelope
from dm3d_exp.core.ranking import (apply_mask_, check_order, magnitude_order, mask_from_order, order_by_scores,
                                   taylor_order)


@pytest.mark.parametrize("num_levels, numel", [(1000, 27 * 16 * 8), (100, 7), (7, 1000003), (3, 1)])
def test_level_counts_are_exact_floors(num_levels, numel):
    counts = level_counts(num_levels, numel)
    expected = [math.floor(Fraction(k, num_levels) * numel) for k in range(num_levels + 1)]
    assert counts.tolist() == expected


@pytest.mark.parametrize("min_density", [0.0, 0.05, 0.3333, 1.0])
def test_max_level_is_the_last_level_meeting_the_density(min_density):
    num_levels, numel = 100, 37
    k = max_level(num_levels, numel, min_density)
    density = lambda j: 1 - math.floor(Fraction(j, num_levels) * numel) / numel  # noqa: E731
    assert density(k) >= min_density
    assert all(density(j) < min_density for j in range(k + 1, num_levels + 1))


def test_level_helpers_reject_bad_values():
    for call in (lambda: level_counts(0, 5), lambda: level_counts(10, 0),
                 lambda: max_level(10, 5, 1.5)):
        with pytest.raises(ValueError):
            call()


def test_monotone_envelope_is_the_running_maximum():
    curve = np.array([0.0, 2.0, 1.0, 3.0, 2.5])
    assert monotone_envelope(curve).tolist() == [0.0, 2.0, 2.0, 3.0, 3.0]


def test_magnitude_order_sorts_abs_with_index_tie_break():
    w = torch.tensor([[[0.5, -0.1, 0.2]], [[-0.5, 0.1, 0.0]]])
    order = magnitude_order(w)
    flat = w.abs().reshape(-1).tolist()
    expected = sorted(range(6), key=lambda i: (flat[i], i))
    assert order.tolist() == expected


def test_taylor_order_is_lexicographic_in_score_then_magnitude():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 5, generator=g)
    gm = torch.randn(3, 4, 5, generator=g)
    gm[0] = 0.0  # a block of tied Taylor scores, broken by |w|
    order = taylor_order(w, gm).tolist()
    score, mag = (w * gm).abs().reshape(-1).tolist(), w.abs().reshape(-1).tolist()
    assert order == sorted(range(w.numel()), key=lambda i: (score[i], mag[i], i))


def test_order_by_scores_rejects_mismatched_keys():
    with pytest.raises(ValueError):
        order_by_scores(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError):
        magnitude_order(torch.zeros(3, 4))


def test_masks_from_an_order_are_nested_and_prune_the_smallest():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 3, 4, generator=g)
    order = magnitude_order(w)
    previous = torch.ones_like(w, dtype=torch.bool)
    for m in range(w.numel() + 1):
        mask = mask_from_order(order, w.shape, m)
        assert int((~mask).sum()) == m
        assert bool((mask <= previous).all())  # pruned sets grow with m
        if 0 < m < w.numel():
            assert w.abs()[~mask].max() <= w.abs()[mask].min()
        previous = mask
    with pytest.raises(ValueError):
        mask_from_order(order, w.shape, w.numel() + 1)


@pytest.mark.parametrize("order", [torch.tensor([0, 1, 1]), torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0]),
                                   torch.tensor([[0, 1, 2]]), torch.tensor([-1, 0, 1]), torch.tensor([0, 1, 3])])
def test_check_order_rejects_non_permutations(order):
    check_order(torch.tensor([2, 0, 1]), 3)
    with pytest.raises(ValueError, match="permutation"):
        check_order(order, 3)


def test_masks_bake_zeros_through_a_canonical_view_into_the_parameter():
    conv = torch.nn.Conv2d(3, 4, 3)
    view = conv.weight.permute(2, 3, 0, 1).reshape(9, 4, 3)  # canonical [K, Cout, Cin], shares storage
    assert view.data_ptr() == conv.weight.data_ptr()
    mask = mask_from_order(magnitude_order(view), tuple(view.shape), 50)
    expected = conv.weight.detach().clone().permute(2, 3, 0, 1).reshape(9, 4, 3) * mask
    apply_mask_(view, mask)
    assert torch.equal(conv.weight.detach().permute(2, 3, 0, 1).reshape(9, 4, 3), expected)
    assert int(torch.count_nonzero(conv.weight)) == 108 - 50


def test_bad_masks_are_refused():
    w = torch.ones(1, 5, 2)
    with pytest.raises(ValueError, match="mask"):
        apply_mask_(w, torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        apply_mask_(w, torch.ones(1, 5, 2))
