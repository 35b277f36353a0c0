"""statcorr (METHOD.md §11.2): matched running statistics against the BN outputs they promise."""
import torch
from torch import nn

from dm3d_exp.core.statcorr import ChannelMoments, matched_running_stats, standardised_shift, variance_matchable


def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=1e-3).double().eval()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) * 3 + 0.1)
    return bn


def _moments(x):
    m = ChannelMoments(x.shape[1])
    for chunk in x.split(3):  # streamed over chunks like frames
        m.add(chunk)
    return m


def _out_moments(bn, x):
    y = bn(x).transpose(0, 1).reshape(x.shape[1], -1)
    return y.mean(1), y.var(1, unbiased=False)


def test_channel_moments_stream_like_the_whole_tensor():
    x = torch.randn(7, 5, 4, 3, dtype=torch.float64) * 3 + 1
    m = _moments(x)
    flat = x.transpose(0, 1).reshape(5, -1)
    torch.testing.assert_close(m.mean, flat.mean(1))
    torch.testing.assert_close(m.var, flat.var(1, unbiased=False))
    assert m.n == 7 * 4 * 3


def test_corrected_bn_gives_the_pruned_input_the_dense_output_moments():
    g = torch.Generator().manual_seed(1)
    c = 6
    bn = _bn(c, 0)
    x_d = torch.randn(9, c, 5, 5, generator=g, dtype=torch.float64) * torch.rand(1, c, 1, 1, generator=g) * 2 + 0.5
    x_p = x_d * (torch.rand(1, c, 1, 1, generator=g, dtype=torch.float64) * 0.8 + 0.3) - 0.7  # rescaled, shifted
    want = _out_moments(bn, x_d)
    assert not torch.allclose(_out_moments(bn, x_p)[0], want[0], atol=1e-3)
    m, v = matched_running_stats(bn.running_mean, bn.running_var, bn.eps, _moments(x_d), _moments(x_p))
    with torch.no_grad():
        bn.running_mean.copy_(m)
        bn.running_var.copy_(v)
    got = _out_moments(bn, x_p)
    torch.testing.assert_close(got[0], want[0], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got[1], want[1], atol=1e-9, rtol=1e-9)


def test_identical_inputs_leave_the_statistics_unchanged():
    bn = _bn(4, 3)
    x = torch.randn(5, 4, 6, dtype=torch.float64)
    m, v = matched_running_stats(bn.running_mean, bn.running_var, bn.eps, _moments(x), _moments(x.clone()))
    torch.testing.assert_close(m, bn.running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(v, bn.running_var, atol=1e-12, rtol=0)
    assert standardised_shift(_moments(x), _moments(x)) == 0.0


def test_constant_channel_matches_the_mean_only_and_variance_never_goes_negative():
    bn = _bn(3, 5)
    with torch.no_grad():
        bn.running_var[2] = 1e-5  # (v + eps) s^2 < eps for a strong shrink: clamped to 0
    x_d = torch.randn(50, 3, dtype=torch.float64)
    x_p = x_d.clone()
    x_p[:, 0] = 0.25            # a channel whose inputs were all pruned away: constant
    x_p[:, 2] *= 1e-2
    dm, pm = _moments(x_d), _moments(x_p)
    assert variance_matchable(dm, pm).tolist() == [False, True, True]
    m, v = matched_running_stats(bn.running_mean, bn.running_var, bn.eps, dm, pm)
    assert float(v[0]) == float(bn.running_var[0]) and float(v[2]) == 0.0
    bn1 = nn.BatchNorm1d(3, eps=bn.eps).double().eval()
    bn1.load_state_dict(bn.state_dict())
    want_mean = bn1(x_d).mean(0)
    with torch.no_grad():
        bn1.running_mean.copy_(m)
        bn1.running_var.copy_(v)
    got = bn1(x_p)
    torch.testing.assert_close(got.mean(0), want_mean, atol=1e-9, rtol=1e-9)  # the mean, even where clamped
    assert torch.isfinite(got).all()
