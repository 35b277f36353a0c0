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


def _lookup_rows(table_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row of every key in ``table_keys`` (unsorted, unique), -1 where absent."""
    if not len(table_keys):
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(table_keys, kind="stable")
    sorted_keys = table_keys[order]
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == len(sorted_keys)] = 0
    return np.where(sorted_keys[pos] == keys, order[pos], -1)


def _tap_sources(indices: np.ndarray, spatial_shape, k, s, p, d, subm: bool):
    """Per tap j: (rows of ``indices`` that take part, the paired coordinate rows [n, 1 + ndim]).

    subm: ``indices`` are the output sites, the paired coordinate is the input o + (j - k//2) * d;
    regular: ``indices`` are the input sites, the paired coordinate is the output o = (i + p - j*d) / s.
    """
    spatial = indices[:, 1:]
    shape = np.array([int(x) for x in spatial_shape])
    if subm:
        centre = np.array([kk // 2 for kk in k])
    else:
        out_shape = np.array(conv_output_shape(spatial_shape, k, s, p, d))
    for off in kernel_offsets(k):
        if subm:
            other = spatial + (off - centre) * np.array(d)
            ok = np.all((other >= 0) & (other < shape), axis=1)
        else:
            num = spatial + np.array(p) - off * np.array(d)
            other = num // np.array(s)
            ok = np.all(num % np.array(s) == 0, axis=1) & np.all((other >= 0) & (other < out_shape), axis=1)
        rows = np.nonzero(ok)[0]
        yield rows, np.concatenate([indices[rows, :1], other[rows]], axis=1)


def rulebook(in_indices: np.ndarray, out_indices: np.ndarray, spatial_shape, kernel_size, stride=1, padding=0,
             dilation=1, subm: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (input row, output row) pairs of every kernel offset j, in weight tap order (module docstring).

    ``in_indices`` / ``out_indices``: the layer's input and output active sites [N, 1 + ndim] (batch,
    spatial...) in their tensors' row order; ``spatial_shape``: the input grid.
    """
    in_indices = np.asarray(in_indices, dtype=np.int64)
    out_indices = np.asarray(out_indices, dtype=np.int64)
    ndim = in_indices.shape[1] - 1
    k, s, p, d = (_as_tuple(v, ndim) for v in (kernel_size, stride, padding, dilation))
    in_shape = tuple(int(x) for x in spatial_shape)
    out_shape = in_shape if subm else conv_output_shape(in_shape, k, s, p, d)
    # subm walks the output sites and finds their inputs; a regular conv walks the inputs to their outputs
    walk, table, table_shape = (out_indices, in_indices, in_shape) if subm else (in_indices, out_indices, out_shape)
    table_keys = _keys(table, table_shape)
    pairs = []
    for walk_rows, other in _tap_sources(walk, in_shape, k, s, p, d, subm=subm):
        other_rows = _lookup_rows(table_keys, _keys(other, table_shape))
        hit = other_rows >= 0
        pairs.append((other_rows[hit], walk_rows[hit]) if subm else (walk_rows[hit], other_rows[hit]))
    return pairs


def tap_pair_counts(indices: np.ndarray, spatial_shape, kernel_size, stride=1, padding=0, dilation=1,
                    subm: bool = False) -> np.ndarray:
    """Pair count n_j for every kernel offset j of one sparse conv applied to active sites ``indices``.

    ``indices``: int array [N, 1 + ndim] (batch, spatial...) as in spconv.SparseConvTensor.
    Returns int64 array [K] in weight tap order.
    """
    indices = np.asarray(indices, dtype=np.int64)
    ndim = indices.shape[1] - 1
    k, s, p, d = (_as_tuple(v, ndim) for v in (kernel_size, stride, padding, dilation))
    if subm:
        return np.array([len(src) for src, _ in rulebook(indices, indices, spatial_shape, k, s, p, d, subm=True)],
                        dtype=np.int64)
    return np.array([len(rows) for rows, _ in _tap_sources(indices, spatial_shape, k, s, p, d, subm=False)],
                    dtype=np.int64)
