import pytest
import torch

from dm3d_exp.core.masks import apply_mask_, apply_masks_, sparsity_report
from dm3d_exp.core.ranking import magnitude_order, mask_from_order


def test_masks_bake_zeros_through_a_canonical_view_into_the_parameter():
    conv = torch.nn.Conv2d(3, 4, 3)
    view = conv.weight.permute(2, 3, 0, 1).reshape(9, 4, 3)  # canonical [K, Cout, Cin], shares storage
    assert view.data_ptr() == conv.weight.data_ptr()
    mask = mask_from_order(magnitude_order(view), tuple(view.shape), 50)
    expected = conv.weight.detach().clone().permute(2, 3, 0, 1).reshape(9, 4, 3) * mask
    apply_mask_(view, mask)
    assert torch.equal(conv.weight.detach().permute(2, 3, 0, 1).reshape(9, 4, 3), expected)
    report = sparsity_report({"conv": conv.weight.detach()})
    assert report["layers"]["conv"] == {"numel": 108, "nonzero": 58, "sparsity": pytest.approx(50 / 108)}


def test_report_totals_and_bad_masks():
    weights = {"a": torch.ones(2, 3, 4), "b": torch.ones(1, 5, 2)}
    apply_masks_(weights, {"a": torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0)) > 0.5})
    nonzero_a = int(torch.count_nonzero(weights["a"]))
    report = sparsity_report(weights)
    nonzero = nonzero_a + 10
    assert report["total"] == {"numel": 34, "nonzero": nonzero, "sparsity": pytest.approx(1 - nonzero / 34)}
    with pytest.raises(ValueError, match="mask"):
        apply_mask_(weights["b"], torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        apply_mask_(weights["b"], torch.ones(1, 5, 2))
    with pytest.raises(ValueError, match="names"):
        apply_masks_(weights, {"c": torch.ones(1, dtype=torch.bool)})
