"""CPU point ops (furthest-point sampling, stacked ball query and grouping) against loop-by-loop references
written from the CUDA kernels' definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dm3d_exp.adapters import point_ops


def _fps_reference(xyz: np.ndarray, m: int) -> list[int]:
    chosen, nearest = [0], np.full(len(xyz), 1e10)
    for _ in range(1, m):
        last = xyz[chosen[-1]]
        for k in range(len(xyz)):
            nearest[k] = min(nearest[k], float(((xyz[k] - last) ** 2).sum()))
        chosen.append(int(np.argmax(nearest)))
    return chosen


def _ball_query_reference(radius, nsample, xyz, counts, centers, center_counts):
    out, p0, c0 = [], 0, 0
    for n, mc in zip(counts, center_counts):
        pts = xyz[p0:p0 + n]
        for c in centers[c0:c0 + mc]:
            row, hits = [0] * nsample, 0
            for k in range(n):
                if float(((c - pts[k]) ** 2).sum()) < radius * radius:
                    if hits == 0:
                        row = [k] * nsample
                    row[hits] = k
                    hits += 1
                    if hits >= nsample:
                        break
            if hits == 0:
                row[0] = -1
            out.append(row)
        p0, c0 = p0 + n, c0 + mc
    return np.array(out, dtype=np.int32)


def _grouping_reference(features, counts, idx, idx_counts):
    m, nsample = idx.shape
    out = np.zeros((m, features.shape[1], nsample), dtype=features.dtype)
    starts = np.concatenate([[0], np.cumsum(counts)])
    row = 0
    for b, mc in enumerate(idx_counts):
        for _ in range(mc):
            for s in range(nsample):
                k = idx[row, s]
                if 0 <= k < counts[b]:
                    out[row, :, s] = features[starts[b] + k]
            row += 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_furthest_point_sample_matches_reference(seed):
    g = np.random.default_rng(seed)
    xyz = g.normal(size=(2, 60, 3)).astype(np.float32)
    got = point_ops.furthest_point_sample(torch.from_numpy(xyz), 12)
    assert got.dtype == torch.int32 and got.shape == (2, 12)
    for b in range(2):
        assert got[b].tolist() == _fps_reference(xyz[b].astype(np.float64), 12)
        assert len(set(got[b].tolist())) == 12  # distinct while there are distinct points left


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stacked_ball_query_matches_reference(seed, monkeypatch):
    g = np.random.default_rng(seed)
    counts, center_counts = [40, 7, 25], [9, 4, 6]
    xyz = g.uniform(-1, 1, size=(sum(counts), 3)).astype(np.float32)
    centers = g.uniform(-1.5, 1.5, size=(sum(center_counts), 3)).astype(np.float32)
    centers[-1] = [9.0, 9.0, 9.0]  # an empty ball
    monkeypatch.setattr(point_ops, "_CHUNK_ELEMENTS", 50)  # several distance blocks per batch element
    got = point_ops.stacked_ball_query(0.5, 5, torch.from_numpy(xyz), torch.from_numpy(centers),
                                       torch.tensor(counts, dtype=torch.int32),
                                       torch.tensor(center_counts, dtype=torch.int32))
    want = _ball_query_reference(0.5, 5, xyz, counts, centers, center_counts)
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), want)
    assert got[-1, 0] == -1 and (got[:, 0] >= 0).sum() > 0


def test_stacked_grouping_matches_reference_and_backpropagates():
    g = np.random.default_rng(5)
    counts, idx_counts = [6, 4], [3, 2]
    feats = g.normal(size=(sum(counts), 3)).astype(np.float32)
    idx = g.integers(0, 4, size=(sum(idx_counts), 4)).astype(np.int32)
    idx[1, 2] = 6  # outside element 0 (size 6): zero
    f = torch.from_numpy(feats).requires_grad_(True)
    got = point_ops.stacked_grouping(f, torch.from_numpy(idx), torch.tensor(counts, dtype=torch.int32),
                                     torch.tensor(idx_counts, dtype=torch.int32))
    np.testing.assert_allclose(got.detach().numpy(), _grouping_reference(feats, counts, idx, idx_counts))
    got.sum().backward()
    uses = np.zeros(sum(counts))
    starts = [0, 0, 0, 6, 6]  # batch start of each index row
    for r in range(idx.shape[0]):
        for k in idx[r]:
            if k < counts[0 if r < 3 else 1]:
                uses[starts[r] + k] += 1
    np.testing.assert_allclose(f.grad.numpy(), np.repeat(uses[:, None], 3, axis=1))


def test_cpu_dispatch_refuses_the_unstacked_form():
    with pytest.raises(NotImplementedError, match="stacked"):
        point_ops._ball_query_cpu(0.0, 1.0, 4, torch.zeros(1, 5, 3), torch.zeros(1, 2, 3))
