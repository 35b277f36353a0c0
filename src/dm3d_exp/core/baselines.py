"""Baseline per-layer sparsity allocations under the same FLOPs target (METHOD.md section 9).

Every baseline prunes, in each layer, a prefix of the magnitude order (|w| ascending, ties by index), so
its masks come from `ranking.mask_from_order(magnitude_order(w), shape, count)` and its MACs are counted
in the run's MACs mode (`macs.mode_prefix_macs`: tap-aware by default, or density). The budget is the prunable-layer MACs allowed by the target (`macs.prunable_budget`,
whole-model denominator by default); each method's one free parameter is matched to it: the smallest
sparsity / global threshold / largest ERK scale whose MACs fit the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .levels import monotone_envelope
from .macs import LayerCost, mode_prefix_macs
from .methods import METHODS, Method, get_method, register_method
from .ranking import magnitude_order


@dataclass(frozen=True)
class CountAllocation:
    """Pruned weights per layer (a prefix of each layer's magnitude order) and the resulting tap-aware MACs."""

    counts: np.ndarray
    macs: np.ndarray

    @property
    def total_macs(self) -> float:
        """Sum of the per-layer MACs."""
        return float(self.macs.sum())


def lamp_scores(sorted_abs: np.ndarray) -> np.ndarray:
    """LAMP score(u) = w_(u)^2 / sum_{v >= u} w_(v)^2 over a layer's ascending |w| (0 where the tail is all zero).

    Nondecreasing in u in exact arithmetic; the cumulative maximum removes rounding-level violations.
    """
    sq = np.asarray(sorted_abs, dtype=np.float64) ** 2
    tail = np.cumsum(sq[::-1])[::-1]
    scores = np.divide(sq, tail, out=np.zeros_like(sq), where=tail > 0)
    return monotone_envelope(scores)


def erk_ratio(cost: LayerCost) -> float:
    """ERK density factor sum(dims) / prod(dims), dims = (Cout, Cin, *kernel_size)."""
    dims = (cost.cout, cost.cin, *cost.kernel_size)
    return float(sum(dims)) / float(np.prod(dims, dtype=np.float64))


def _bisect_counts(
    counts_at: Callable[[float], np.ndarray], prefix: Sequence[np.ndarray], budget: float, iterations: int = 200
) -> CountAllocation:
    """Smallest t in [0, 1] whose counts (nondecreasing in t) fit the budget, by bisection."""

    def allocation(t: float) -> CountAllocation:
        counts = counts_at(t)
        return CountAllocation(counts, np.array([p[m] for p, m in zip(prefix, counts)]))

    best = allocation(1.0)
    if best.total_macs > budget:
        raise ValueError(f"budget={budget!r}: expected at least this baseline's minimum MACs {best.total_macs!r}")
    first = allocation(0.0)
    if first.total_macs <= budget:
        return first
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if allocation(mid).total_macs <= budget:
            hi = mid
        else:
            lo = mid
    return allocation(hi)


def uniform_counts(
    prefix: Sequence[np.ndarray], budget: float, first_dense: bool = False, last_min_density: float = 0.0
) -> CountAllocation:
    """Same sparsity s in every layer, m_l = floor(s * n_l), s matched to the budget (uniform).

    uniform+: first_dense keeps layer 0 dense and last_min_density (0.2) caps the last layer's pruning at
    n - ceil(0.2 n). Layers are in forward order.
    """
    if not 0.0 <= last_min_density <= 1.0:
        raise ValueError(f"last_min_density={last_min_density!r}: expected a fraction in [0, 1]")
    numels = np.array([p.size - 1 for p in prefix], dtype=np.int64)
    caps = numels.copy()
    caps[-1] = numels[-1] - int(np.ceil(last_min_density * numels[-1]))
    if first_dense:
        caps[0] = 0
    return _bisect_counts(lambda s: np.minimum(np.floor(s * numels).astype(np.int64), caps), prefix, budget)


def erk_counts(prefix: Sequence[np.ndarray], costs: Sequence[LayerCost], budget: float) -> CountAllocation:
    """ERK: density_l = min(1, eps * sum(dims)/prod(dims)), m_l = floor((1 - density_l) n_l), largest eps fitting.

    Clamping at 1 inside the budget match is the fixed point of "set overflowing layers dense and re-solve eps".
    """
    ratios = np.array([erk_ratio(c) for c in costs])
    numels = np.array([p.size - 1 for p in prefix], dtype=np.int64)
    eps_dense = 1.0 / ratios.min()

    def counts_at(t: float) -> np.ndarray:
        density = np.minimum(1.0, (1.0 - t) * eps_dense * ratios)
        return np.floor((1.0 - density) * numels).astype(np.int64)

    return _bisect_counts(counts_at, prefix, budget)


def global_threshold_counts(
    scores: Sequence[np.ndarray], prefix: Sequence[np.ndarray], budget: float
) -> CountAllocation:
    """One global threshold on per-weight scores: prune the globally lowest scores until the MACs fit.

    scores[l] lists layer l's scores in its magnitude order and must be nondecreasing, so each layer prunes a
    prefix; ties break by layer, then position. Exact: the fewest global prunes whose MACs fit the budget.
    """
    if len(scores) != len(prefix):
        raise ValueError(f"{len(scores)} score vectors: expected one per layer ({len(prefix)})")
    for l, (s, p) in enumerate(zip(scores, prefix)):
        if s.shape != (p.size - 1,) or np.any(np.diff(s) < 0):
            raise ValueError(f"layer {l}: scores of shape {s.shape}: expected {p.size - 1} nondecreasing values")
    layer = np.concatenate([np.full(s.size, l) for l, s in enumerate(scores)])
    pos = np.concatenate([np.arange(s.size) for s in scores])
    order = np.lexsort((pos, layer, np.concatenate(scores)))
    removed = np.concatenate([-np.diff(p) for p in prefix])[order]
    remaining = np.append(np.cumsum(removed[::-1])[::-1], 0.0)
    if remaining[-1] > budget:
        raise ValueError(f"budget={budget!r}: expected >= 0")
    pruned = int(np.argmax(remaining <= budget))
    counts = np.bincount(layer[order[:pruned]], minlength=len(prefix)).astype(np.int64)
    return CountAllocation(counts, np.array([p[m] for p, m in zip(prefix, counts)]))


register_method(Method("uniform", "the same sparsity in every layer",
                       rule=lambda sorted_abs, prefix, costs, budget: uniform_counts(prefix, budget)))
register_method(Method("uniform_plus", "uniform, first layer dense, last layer at least 20 % dense",
                       rule=lambda sorted_abs, prefix, costs, budget: uniform_counts(
                           prefix, budget, first_dense=True, last_min_density=0.2)))
register_method(Method("global_magnitude", "one global |w| threshold",
                       rule=lambda sorted_abs, prefix, costs, budget: global_threshold_counts(sorted_abs, prefix, budget)))
register_method(Method("lamp", "one global LAMP-score threshold",
                       rule=lambda sorted_abs, prefix, costs, budget: global_threshold_counts(
                           [lamp_scores(a) for a in sorted_abs], prefix, budget)))
register_method(Method("erk", "Erdos-Renyi-kernel densities, one scale",
                       rule=lambda sorted_abs, prefix, costs, budget: erk_counts(prefix, costs, budget)))


def baseline_counts(
    method: str,
    weights: Sequence[torch.Tensor],
    costs: Sequence[LayerCost],
    budget: float,
    macs_mode: str = "tap_aware",
) -> CountAllocation:
    """Pruned counts per layer (magnitude-order prefixes) for one METHOD §9 baseline (a registered method
    with a ``rule``) at a prunable-MACs budget, MACs counted in ``macs_mode`` (tap_aware | density,
    :func:`~dm3d_exp.core.macs.mode_prefix_macs`).
    """
    try:
        rule = get_method(method).rule
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    if rule is None:
        rules = [name for name, m in METHODS.items() if m.rule]
        raise ValueError(f"method={method!r} has no baseline rule: expected one of {rules}")
    if len(weights) != len(costs) or not costs:
        raise ValueError(f"{len(weights)} weights and {len(costs)} costs: expected the same non-zero number of layers")
    for w, c in zip(weights, costs):
        if tuple(w.shape) != c.shape:
            raise ValueError(f"{c.name}: weight shape {tuple(w.shape)}: expected {c.shape}")
    orders = [magnitude_order(w) for w in weights]
    prefix = [mode_prefix_macs(c, o, macs_mode) for c, o in zip(costs, orders)]
    sorted_abs = [w.detach().abs().reshape(-1)[o].to(torch.float64).cpu().numpy() for w, o in zip(weights, orders)]
    return rule(sorted_abs, prefix, costs, budget)
