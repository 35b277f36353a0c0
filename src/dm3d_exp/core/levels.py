"""Sparsity levels s_k = k / K and the nested pruned counts m_k (METHOD.md section 5)."""

from __future__ import annotations

import numpy as np


def _check_levels(num_levels: int, numel: int) -> None:
    if int(num_levels) != num_levels or num_levels < 1:
        raise ValueError(f"num_levels={num_levels!r}: expected an integer >= 1")
    if int(numel) != numel or numel < 1:
        raise ValueError(f"numel={numel!r}: expected an integer >= 1")


def level_counts(num_levels: int, numel: int) -> np.ndarray:
    """Vector [m_0, ..., m_K] of pruned counts m_k = (k * numel) // K, int64, nondecreasing (METHOD §5)."""
    _check_levels(num_levels, numel)
    return np.arange(num_levels + 1, dtype=np.int64) * int(numel) // int(num_levels)


def max_level(num_levels: int, numel: int, min_density: float) -> int:
    """Largest level k whose density 1 - m_k / numel is still >= min_density (METHOD §5 minimum density).

    Curves and costs truncated to levels 0..max_level enforce the per-layer minimum density.
    """
    if not 0.0 <= min_density <= 1.0:
        raise ValueError(f"min_density={min_density!r}: expected a fraction in [0, 1]")
    kept = numel - level_counts(num_levels, numel)
    return int(np.flatnonzero(kept >= min_density * numel)[-1])


def monotone_envelope(curve: np.ndarray) -> np.ndarray:
    """Cumulative maximum max_{j <= k} curve[j]: the monotone curve enforced in METHOD §5."""
    return np.maximum.accumulate(np.asarray(curve, dtype=np.float64))
