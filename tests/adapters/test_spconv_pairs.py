"""Rulebook pair counts: our counter vs a brute-force loop and vs spconv's own rulebook."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from dm3d_exp.adapters.macs_probe import PairRecorder
from dm3d_exp.adapters.spconv_pairs import tap_pair_counts

spconv = pytest.importorskip("spconv.pytorch", reason="spconv not installed")


def _random_sites(rng, shape, n, batch=2):
    rows = []
    for b in range(batch):
        flat = rng.choice(int(np.prod(shape)), size=n, replace=False)
        coords = np.stack(np.unravel_index(flat, shape), 1)
        rows.append(np.concatenate([np.full((n, 1), b), coords], 1))
    return np.concatenate(rows).astype(np.int32)


def _brute_counts(indices, shape, k, s, p, d, subm):
    active = {tuple(r) for r in indices.tolist()}
    counts = []
    if subm:
        for off in itertools.product(*[range(kk) for kk in k]):
            counts.append(sum((r[0], *[c + (o - kk // 2) * dd for c, o, kk, dd in zip(r[1:], off, k, d)]) in active
                              for r in indices.tolist()))
        return np.array(counts)
    out_shape = [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in zip(shape, k, s, p, d)]
    for off in itertools.product(*[range(kk) for kk in k]):
        c = 0
        for r in indices.tolist():
            for o in itertools.product(*[range(n) for n in out_shape]):
                if all(oo * ss - pp + ff * dd == ii for oo, ss, pp, ff, dd, ii in zip(o, s, p, off, d, r[1:])):
                    c += 1
        counts.append(c)
    return np.array(counts)


@pytest.mark.parametrize("subm,k,s,p,d", [(True, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
                                          (False, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
                                          (False, (3, 1, 1), (2, 1, 1), (0, 0, 0), (1, 1, 1)),
                                          (False, (2, 3, 3), (1, 2, 1), (0, 1, 2), (1, 1, 2))])
def test_counts_match_brute_force(subm, k, s, p, d):
    rng = np.random.default_rng(3)
    shape = (4, 5, 6)
    idx = _random_sites(rng, shape, 20)
    ours = tap_pair_counts(idx, shape, k, s, p, d, subm=subm)
    assert np.array_equal(ours, _brute_counts(idx, shape, k, s, p, d, subm))
    assert ours.sum() > 0


@pytest.mark.parametrize("subm", [True, False])
def test_counts_match_spconv_rulebook(subm):
    rng = np.random.default_rng(0)
    shape = [9, 12, 10]
    idx = _random_sites(rng, shape, 80)
    x = spconv.SparseConvTensor(torch.randn(len(idx), 2), torch.from_numpy(idx), shape, 2)
    layer = (spconv.SubMConv3d(2, 3, 3, bias=False, indice_key="k") if subm else
             spconv.SparseConv3d(2, 3, 3, stride=2, padding=1, bias=False, indice_key="k"))
    out = layer(x)
    theirs = out.indice_dict["k"].indice_pair_num.numpy()
    ours = tap_pair_counts(idx, shape, 3, layer.stride, layer.padding, layer.dilation, subm=subm)
    if subm:
        # spconv's native submanifold rulebook stores only the first K//2 offsets: the pairs of offset
        # K-1-j mirror those of j and the centre tap is the identity map.
        half = len(ours) // 2
        assert np.array_equal(ours[:half], theirs[:half])
        assert np.array_equal(ours, ours[::-1]) and ours[half] == len(idx)
    else:
        assert np.array_equal(ours, theirs)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.subm = spconv.SubMConv3d(2, 4, 3, bias=False, indice_key="s1")
        self.down = spconv.SparseConv3d(4, 4, 3, stride=2, padding=1, bias=False, indice_key="d1")
        self.up = spconv.SparseInverseConv3d(4, 2, 3, bias=False, indice_key="d1")
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        y = self.up(self.down(self.subm(x)))
        dense = y.dense().sum(2)  # [B, C, H, W]
        return self.lin(self.conv(dense).permute(0, 2, 3, 1))


def test_pair_recorder_averages_per_frame_and_handles_inverse():
    rng = np.random.default_rng(1)
    shape = [6, 8, 8]
    model = _Tiny()
    idx = _random_sites(rng, shape, 30, batch=2)
    x = spconv.SparseConvTensor(torch.randn(len(idx), 2), torch.from_numpy(idx), shape, 2)
    with PairRecorder(model) as rec:
        out = model(x)
        rec.add_frames(2)
    pairs = rec.mean_pairs()
    assert np.array_equal(pairs["subm"] * 2, tap_pair_counts(idx, shape, 3, 1, 1, 1, subm=True))
    down = tap_pair_counts(idx, shape, 3, 2, 1, 1)
    assert np.array_equal(pairs["down"] * 2, down)
    assert np.array_equal(pairs["up"], pairs["down"])  # the inverse reuses the forward rulebook
    assert np.all(pairs["conv"] == 8 * 8) and pairs["conv"].shape == (9,)
    assert pairs["lin"].shape == (1,) and pairs["lin"][0] == 8 * 8
    assert out.shape == (2, 8, 8, 1)


def test_zeroing_one_kernel_offset_removes_exactly_its_pairs_macs():
    """Tap-aware MACs of a real spconv layer: zeroing tap j removes n_j * Cin * Cout (METHOD §7)."""
    from dm3d_exp.adapters.layers import layer_spec, weight_view
    from dm3d_exp.core.macs import LayerCost

    rng = np.random.default_rng(4)
    shape = [6, 8, 8]
    model = _Tiny()
    idx = _random_sites(rng, shape, 40, batch=1)
    with PairRecorder(model) as rec:
        model(spconv.SparseConvTensor(torch.randn(len(idx), 2), torch.from_numpy(idx), shape, 1))
        rec.add_frames(1)
    pairs = rec.mean_pairs()
    for name in ("subm", "down", "up"):
        layer = getattr(model, name)
        spec = layer_spec(layer)
        cost = LayerCost(name, pairs[name], spec.cout, spec.cin, spec.kernel)
        view = weight_view(layer).detach().clone()
        for j in (0, 13, 26):
            mask = torch.ones_like(view, dtype=torch.bool)
            mask[j] = False
            removed = cost.dense_macs - cost.pruned_macs(mask)
            assert removed == pytest.approx(pairs[name][j] * spec.cin * spec.cout)
        assert cost.dense_macs == pytest.approx(pairs[name].sum() * spec.cin * spec.cout)
