import pytest
import torch

from dm3d_exp.core.masks import apply_mask_
from dm3d_exp.core.ranking import magnitude_order, mask_from_order


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
