"""spconv layer views checked against a brute-force sparse convolution written from the view."""
import itertools

import numpy as np
import pytest
import torch

from dm3d_exp.adapters.layers import weight_view

spconv = pytest.importorskip("spconv.pytorch", reason="spconv not installed")


def _dense_active(indices, feats, shape):
    grid = {tuple(int(v) for v in idx): feats[i] for i, idx in enumerate(indices)}
    return grid


@pytest.mark.parametrize("subm", [True, False])
def test_spconv_view_reproduces_sparse_convolution(subm):
    from dm3d_exp.adapters.layers import spconv_layout

    torch.manual_seed(1)
    shape = (5, 6, 7)
    n = 25
    flat = torch.randperm(int(np.prod(shape)))[:n]
    coords = torch.stack(torch.unravel_index(flat, shape), 1).int()
    indices = torch.cat([torch.zeros(n, 1, dtype=torch.int32), coords], 1)
    # float32: spconv 2.3.8's CPU gather/scatter path reads uninitialised memory for float64 features
    # (about 1 call in 700 came out wrong in a loop), so this check uses the dtype the detectors run in.
    feats = torch.randn(n, 3, dtype=torch.float32)
    x = spconv.SparseConvTensor(feats, indices, list(shape), 1)
    if subm:
        layer = spconv.SubMConv3d(3, 4, 3, bias=False, indice_key="k")
    else:
        layer = spconv.SparseConv3d(3, 4, 3, stride=2, padding=1, bias=False, indice_key="k")
    with torch.no_grad():
        layer.weight.normal_()
    out = layer(x)
    assert spconv_layout(layer) == "KRSC"
    view = weight_view(layer)
    assert view.shape == (27, 4, 3)
    active = _dense_active(indices[:, 1:].tolist(), feats, shape)
    offs = list(itertools.product(range(3), repeat=3))
    for row, o in zip(out.features, out.indices[:, 1:].tolist()):
        acc = torch.zeros(4, dtype=torch.float32)
        for j, d in enumerate(offs):
            src = tuple(oi + di - 1 for oi, di in zip(o, d)) if subm else tuple(2 * oi - 1 + di for oi, di in zip(o, d))
            if src in active:
                acc += view[j] @ active[src]
        assert torch.allclose(acc, row, rtol=1e-5, atol=1e-5)


def test_mmcv_sparse_conv_rsck_view_and_layout():
    """mmcv's spconv-1 port stores [*k, Cin, Cout]; the canonical view must pick W[j][o, c] correctly."""
    ops = pytest.importorskip("mmcv.ops", reason="mmcv ops not built")
    from dm3d_exp.adapters.layers import layer_spec, spconv_layout

    layer = ops.SparseConv3d(3, 5, 3, stride=2, indice_key="m")
    with torch.no_grad():
        layer.weight.copy_(torch.arange(layer.weight.numel(), dtype=torch.float32).reshape(layer.weight.shape))
    assert spconv_layout(layer) == "RSCK"
    view = weight_view(layer)
    assert view.shape == (27, 5, 3)
    for j, o, c in [(0, 0, 0), (5, 4, 2), (26, 1, 1)]:
        kz, ky, kx = np.unravel_index(j, (3, 3, 3))
        assert view[j, o, c] == layer.weight[kz, ky, kx, c, o]
    spec = layer_spec(layer)
    assert (spec.kind, spec.taps, spec.cout, spec.cin, spec.kernel) == ("sparse_conv", 27, 5, 3, (3, 3, 3))
