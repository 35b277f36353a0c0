"""Canonical [K, Cout, Cin] views checked against brute-force convolutions written from the view."""
import itertools

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from dm3d_exp.adapters.layers import layer_spec, prunable_modules, weight_view

torch.manual_seed(0)


def _brute_conv2d(x, view, stride, padding, dilation, kernel):
    """out[b, o, y, x] = sum_j view[j] @ xpad[b, :, y*s + ky*d, x*s + kx*d] (j = ky*kw + kx)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    kh, kw = kernel
    Ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = torch.zeros(B, view.shape[1], Ho, Wo, dtype=x.dtype)
    for j, (ky, kx) in enumerate(itertools.product(range(kh), range(kw))):
        patch = xp[:, :, ky * dilation: ky * dilation + stride * (Ho - 1) + 1: stride,
                   kx * dilation: kx * dilation + stride * (Wo - 1) + 1: stride]
        out += torch.einsum("oc,bchw->bohw", view[j], patch)
    return out


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_conv2d_view_reproduces_convolution(stride, padding, dilation):
    conv = nn.Conv2d(3, 5, (3, 2), stride=stride, padding=padding, dilation=dilation, bias=False).double()
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    view = weight_view(conv)
    assert view.shape == (6, 5, 3)
    ref = conv(x)
    assert torch.allclose(_brute_conv2d(x, view, stride, padding, dilation, (3, 2)), ref, atol=1e-10)


def test_conv_transpose2d_view_reproduces_convolution():
    ct = nn.ConvTranspose2d(4, 3, 2, stride=2, bias=False).double()
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    view = weight_view(ct)
    assert view.shape == (4, 3, 4) and layer_spec(ct).cin == 4 and layer_spec(ct).cout == 3
    out = torch.zeros(1, 3, 6, 10, dtype=torch.float64)
    for j, (ky, kx) in enumerate(itertools.product(range(2), range(2))):
        out[:, :, ky::2, kx::2] += torch.einsum("oc,bchw->bohw", view[j], x)
    assert torch.allclose(out, ct(x), atol=1e-10)


def test_linear_view_and_views_alias_weights():
    lin = nn.Linear(4, 3)
    v = weight_view(lin)
    assert v.shape == (1, 3, 4)
    x = torch.randn(5, 4)
    assert torch.allclose(x @ v[0].T + lin.bias, lin(x))
    conv = nn.Conv2d(2, 3, 3)
    for m in (lin, conv):
        v = weight_view(m)
        before = m.weight.detach().clone()
        with torch.no_grad():
            v[0, 1].zero_()
        changed = (m.weight != before)
        assert changed.any() and (weight_view(m)[0, 1] == 0).all()
        assert int((m.weight == 0).sum()) == v.shape[2]  # exactly one output row of one tap


def test_grouped_conv_spec_counts_per_group_channels():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    spec = layer_spec(conv)
    assert (spec.taps, spec.cout, spec.cin, spec.groups) == (9, 6, 2, 2)
    assert weight_view(conv).shape == (9, 6, 2)


def test_prunable_modules_finds_conv_linear_only():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert [n for n, _ in prunable_modules(model)] == ["0", "4"]


def test_layer_types_are_named_and_neither_a_name_nor_a_module_is_claimed_twice():
    from dm3d_exp.adapters import layers

    assert {"linear", "conv", "conv_transpose", "spconv"} <= set(layers.LAYER_TYPES.names())
    with pytest.raises(ValueError, match="layer type 'conv' is already registered"):
        layers.register_layer_type("conv", lambda: (nn.Conv2d,))(type("Again", (), {}))

    class Bilinear(nn.Linear):  # a subclass of a registered type is that type
        pass

    assert layer_spec(Bilinear(3, 2)).kind == "linear"
    # a second type claiming nn.Linear modules: the lookup refuses instead of letting one silently win
    layers.register_layer_type("test_linear_twin", lambda: (nn.Linear,))(type("Twin", (), {}))
    try:
        with pytest.raises(TypeError, match=r"Linear is matched by layer types \['linear', 'test_linear_twin'\]"):
            layer_spec(nn.Linear(3, 2))
    finally:
        layers.LAYER_TYPES._entries.pop("test_linear_twin")
        layers._type_of.cache_clear()
    assert layer_spec(nn.Linear(3, 2)).kind == "linear"


def test_every_dense_type_counts_its_own_pairs():
    """n_j per tap from one forward: Conv = output sites, ConvTranspose = input sites, Linear = rows."""
    from dm3d_exp.adapters.layers import layer_pairs

    x = torch.randn(2, 3, 5, 7)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    y = conv(x)
    assert list(layer_pairs(conv, (x,), y)) == [2.0 * 3 * 4] * 9
    convt = nn.ConvTranspose2d(3, 4, 2, stride=2)
    assert list(layer_pairs(convt, (x,), convt(x))) == [2.0 * 5 * 7] * 4
    lin = nn.Linear(7, 2)
    assert list(layer_pairs(lin, (x,), lin(x))) == [2.0 * 3 * 5]
    with pytest.raises(TypeError, match="no layer type registered for BatchNorm2d; registered: linear, conv"):
        layer_pairs(nn.BatchNorm2d(3), (x,), x)
