"""Rulebook pair counts per kernel offset of spconv layers, computed from active-site coordinates.

For a sparse convolution with kernel k, stride s, padding p, dilation d, the pair (input i, output o)
exists for kernel offset j (multi-index in [0, k)) when

    regular conv:  o * s - p + j * d = i,  0 <= o < out_shape = floor((in + 2p - d(k-1) - 1) / s) + 1
    submanifold:   o active and i = o + (j - k//2) * d active  (output sites = input sites)

n_j = number of such pairs; dense-equivalent MACs of the layer = sum_j n_j * Cin * Cout (METHOD.md §7).
An inverse convolution reuses the rulebook of the convolution with the same indice_key (roles swapped),
so its counts are those of that convolution evaluated on the inverse layer's output sites.
"""
from __future__ import annotations

import itertools

import numpy as np


def _as_tuple(v, ndim: int) -> tuple[int, ...]:
    return tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v] * ndim))


def kernel_offsets(kernel_size) -> np.ndarray:
    """All kernel multi-indices in row-major (spconv / torch weight) order, shape [K, ndim]."""
    return np.array(list(itertools.product(*[range(k) for k in kernel_size])), dtype=np.int64).reshape(-1, len(kernel_size))


def conv_output_shape(spatial_shape, kernel_size, stride, padding, dilation) -> tuple[int, ...]:
    """Output grid of a regular (strided) sparse convolution, as spconv computes it."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(spatial_shape, kernel_size, stride, padding, dilation))


def _keys(coords: np.ndarray, shape) -> np.ndarray:
    """Unique int64 key per (batch, *spatial) coordinate row (row-major encoding)."""
    dims = np.array([np.iinfo(np.int32).max, *shape], dtype=np.int64)
    key = coords[:, 0].astype(np.int64)
    for c in range(1, coords.shape[1]):
        key = key * dims[c] + coords[:, c]
    return key


def tap_pair_counts(indices: np.ndarray, spatial_shape, kernel_size, stride=1, padding=0, dilation=1,
                    subm: bool = False) -> np.ndarray:
    """Pair count n_j for every kernel offset j of one sparse conv applied to active sites ``indices``.

    ``indices``: int array [N, 1 + ndim] (batch, spatial...) as in spconv.SparseConvTensor.
    Returns int64 array [K] in weight tap order.
    """
    indices = np.asarray(indices, dtype=np.int64)
    ndim = indices.shape[1] - 1
    k, s, p, d = (_as_tuple(v, ndim) for v in (kernel_size, stride, padding, dilation))
    offsets = kernel_offsets(k)
    spatial = indices[:, 1:]
    counts = np.zeros(len(offsets), dtype=np.int64)
    if subm:
        shape = tuple(int(x) for x in spatial_shape)
        active = np.sort(_keys(indices, shape))
        centre = np.array([kk // 2 for kk in k])
        for j, off in enumerate(offsets):
            src = spatial + (off - centre) * np.array(d)
            inside = np.all((src >= 0) & (src < np.array(shape)), axis=1)
            keys = _keys(np.concatenate([indices[inside, :1], src[inside]], axis=1), shape)
            pos = np.searchsorted(active, keys)
            pos[pos == len(active)] = 0
            counts[j] = int(np.count_nonzero(active[pos] == keys)) if len(active) else 0
        return counts
    out_shape = np.array(conv_output_shape(spatial_shape, k, s, p, d))
    for j, off in enumerate(offsets):
        num = spatial + np.array(p) - off * np.array(d)
        ok = np.all((num % np.array(s) == 0), axis=1)
        o = num // np.array(s)
        ok &= np.all((o >= 0) & (o < out_shape), axis=1)
        counts[j] = int(np.count_nonzero(ok))
    return counts
