"""im2col of every prunable layer type: ``im2col(x) @ rows(view).T`` equals the layer's real output
(METHOD.md §11.1: "check X_col @ W == the layer's real output before trusting a layout")."""
import numpy as np
import pytest
import torch
from torch import nn

from dm3d_exp.adapters.layers import from_rows, layer_im2col, layer_outputs, rows, weight_view

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check(layer, inputs, partner=None):
    with torch.no_grad():
        out = layer(*inputs)
        cols = layer_im2col(layer, inputs, out, partner)
        ref = layer_outputs(layer, out)
        assert cols.shape == (ref.shape[0], rows(weight_view(layer)).shape[1])
        torch.testing.assert_close(cols @ rows(weight_view(layer)).T, ref, rtol=1e-4, atol=1e-4)
    return cols


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(3, 1), stride=(1, 2), dilation=2, padding=(2, 0)),
                                dict(kernel_size=1, bias=True)])
def test_conv2d(kw):
    torch.manual_seed(0)
    _check(nn.Conv2d(3, 5, **kw), (torch.randn(2, 3, 9, 8),))


@pytest.mark.parametrize("kw", [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1,
                                                                    output_padding=1),
                                dict(kernel_size=3, stride=1, padding=1, dilation=1, bias=True),
                                dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1), dilation=(1, 2))])
def test_conv_transpose2d(kw):
    torch.manual_seed(0)
    _check(nn.ConvTranspose2d(4, 3, **kw), (torch.randn(2, 4, 5, 6),))


def test_conv1d_and_linear():
    torch.manual_seed(0)
    _check(nn.Conv1d(3, 4, kernel_size=3, stride=2, padding=1), (torch.randn(2, 3, 11),))
    _check(nn.Linear(6, 4), (torch.randn(2, 7, 6),))


def test_rows_round_trip():
    view = torch.randn(9, 4, 3)
    torch.testing.assert_close(from_rows(rows(view), view.shape), view)


def test_grouped_conv_is_refused():
    layer = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(NotImplementedError, match="groups=2"):
        _check(layer, (torch.randn(1, 4, 5, 5),))


@pytest.fixture
def spconv():
    return pytest.importorskip("spconv.pytorch", reason="spconv not installed")


def _sparse_input(spconv, shape=(7, 8, 9), n=60, cin=3, seed=1, batch=2):
    g = torch.Generator().manual_seed(seed)
    idx = []
    for b in range(batch):
        flat = torch.randperm(int(np.prod(shape)), generator=g)[:n]
        coords = torch.stack(torch.unravel_index(flat, shape), 1).int()
        idx.append(torch.cat([torch.full((n, 1), b, dtype=torch.int32), coords], 1))
    indices = torch.cat(idx)
    feats = torch.randn(len(indices), cin, generator=g)  # float32: the detectors' dtype (see test_spconv_layers)
    return spconv.SparseConvTensor(feats, indices, list(shape), batch)


def _normal_(layer):
    with torch.no_grad():
        layer.weight.normal_()
    return layer


@pytest.mark.parametrize("make", [
    lambda sp: sp.SubMConv3d(3, 4, 3, bias=False, indice_key="s"),
    lambda sp: sp.SubMConv3d(3, 4, (3, 1, 3), dilation=2, bias=False, indice_key="s"),
    lambda sp: sp.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=False, indice_key="c"),
    lambda sp: sp.SparseConv3d(3, 4, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, indice_key="c"),
], ids=["subm", "subm_dilated_anisotropic", "strided", "z_only"])
def test_spconv_layers(spconv, make):
    torch.manual_seed(0)
    _check(_normal_(make(spconv)), (_sparse_input(spconv),))


def test_spconv_inverse_uses_its_partners_rulebook(spconv):
    torch.manual_seed(0)
    down = _normal_(spconv.SparseConv3d(3, 5, 3, stride=2, padding=1, bias=False, indice_key="pair"))
    up = _normal_(spconv.SparseInverseConv3d(5, 2, 3, bias=False, indice_key="pair"))
    with torch.no_grad():
        mid = down(_sparse_input(spconv))
    _check(up, (mid,), partner=down)
    with pytest.raises(ValueError, match="its SparseConv3d is needed"):
        _check(up, (mid,))
