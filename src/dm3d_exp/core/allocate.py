"""Layer-adaptive sparsity allocation under a FLOPs budget (METHOD.md section 8).

Choose one level k_l per layer minimising sum_l delta_l(k_l) subject to sum_l c_l(k_l) <= budget.
curves[l][k] = delta_l(k) and costs[l][k] = c_l(k) (e.g. tap-aware MACs); layers may have different
numbers of levels (e.g. truncated by a minimum density).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Allocation:
    """Chosen level per layer, with the achieved total cost and predicted total distortion sum_l delta_l(k_l)."""

    levels: list[int]
    cost: float
    distortion: float
    budget: float


Layers = list[tuple[np.ndarray, np.ndarray]]


def _check_inputs(curves: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float) -> Layers:
    if len(curves) != len(costs) or not curves:
        raise ValueError(f"{len(curves)} curves and {len(costs)} cost vectors: expected the same number >= 1")
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget={budget!r}: expected a finite cost > 0")
    layers = []
    for l, (curve, cost) in enumerate(zip(curves, costs)):
        curve = np.asarray(curve, dtype=np.float64)
        cost = np.asarray(cost, dtype=np.float64)
        if curve.ndim != 1 or curve.shape != cost.shape or curve.size == 0:
            shapes = f"curve shape {curve.shape}, cost shape {cost.shape}"
            raise ValueError(f"layer {l}: {shapes}: expected equal non-empty 1-D shapes")
        if not (np.all(np.isfinite(curve)) and np.all(np.isfinite(cost)) and np.all(cost >= 0)):
            raise ValueError(f"layer {l}: non-finite curve/cost or negative cost: expected finite values, costs >= 0")
        layers.append((curve, cost))
    cheapest = sum(float(cost.min()) for _, cost in layers)
    if cheapest > budget:
        raise ValueError(f"budget={budget!r}: expected at least the cheapest allocation's cost {cheapest!r}")
    return layers


def _result(layers: Layers, levels: Sequence[int], budget: float) -> Allocation:
    levels = [int(k) for k in levels]
    return Allocation(
        levels=levels,
        cost=float(sum(cost[k] for (_, cost), k in zip(layers, levels))),
        distortion=float(sum(curve[k] for (curve, _), k in zip(layers, levels))),
        budget=float(budget),
    )


def _pareto_candidates(curve: np.ndarray, int_cost: np.ndarray, units: int) -> tuple[np.ndarray, ...]:
    """Levels that are not dominated in (integer cost, distortion), sorted by cost ascending.

    Dropping a level with another of no larger integer cost and no larger distortion never changes the
    optimum of the discretised problem.
    """
    idx = np.flatnonzero(int_cost <= units)
    idx = idx[np.lexsort((idx, curve[idx], int_cost[idx]))]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], curve[idx])))[:-1]
    idx = idx[curve[idx] < best_before]
    return idx, int_cost[idx], curve[idx]


def dp_allocate(
    curves: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float, units: int = 10000
) -> Allocation:
    """Exact optimum of the discretised problem by dynamic programming (METHOD §8).

    Costs become integer units ceil(c / u), u = budget / units, so every discrete-feasible choice is truly
    feasible. dp_0[b] = 0, dp_l[b] = min_k dp_{l-1}[b - c_l(k)] + delta_l(k), answer dp_L[units], vectorised
    over b with a loop over the non-dominated levels; O(L * (K+1) * units) time. Backtracking recomputes the
    minimising level from the stored float64 tables dp_0..dp_{L-1} (O(L * units) memory), which is exact
    because the recomputed sums are bitwise the ones the forward pass minimised.
    Error bound: since ceil(c/u) <= c/u + 1, any choice with true cost <= budget - L * u is discrete-feasible,
    so the result is at least as good as the true optimum under the budget reduced by L * u.
    """
    if int(units) != units or units < 1:
        raise ValueError(f"units={units!r}: expected an integer >= 1")
    units = int(units)
    layers = _check_inputs(curves, costs, budget)
    unit = budget / units
    candidates = []
    for curve, cost in layers:
        int_cost = np.ceil(np.minimum(cost / unit, units + 1.0)).astype(np.int64)
        candidates.append(_pareto_candidates(curve, int_cost, units))
    needed = sum(int(c[0]) if c.size else units + 1 for _, c, _ in candidates)
    if needed > units:
        raise ValueError(
            f"units={units}: the cheapest allocation needs {needed} units of {unit!r} after rounding up;"
            " expected more units"
        )
    tables = [np.zeros(units + 1)]
    scratch = np.empty(units + 1)
    for _, int_cost, curve in candidates[:-1]:
        prev, new = tables[-1], np.full(units + 1, np.inf)
        for c, d in zip(int_cost.tolist(), curve.tolist()):
            n = units + 1 - c
            np.add(prev[:n], d, out=scratch[:n])
            np.minimum(new[c:], scratch[:n], out=new[c:])
        tables.append(new)
    levels = []
    b = units
    for (level_idx, int_cost, curve), prev in zip(reversed(candidates), reversed(tables)):
        fits = int_cost <= b
        j = int(np.argmin(prev[b - int_cost[fits]] + curve[fits]))
        levels.append(int(level_idx[fits][j]))
        b -= int(int_cost[fits][j])
    return _result(layers, levels[::-1], budget)


def lagrangian_allocate(
    curves: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float, iterations: int = 200
) -> Allocation:
    """Slope (Lagrangian) solver, the cheaper ablation of METHOD §8.

    For a multiplier lambda each layer independently takes argmin_k delta_l(k) + lambda * c_l(k) (ties: lower
    cost); total cost is nonincreasing in lambda, so bisection finds the smallest lambda whose choice fits the
    budget. Only lower-convex-hull points of each (cost, delta) curve are reachable; the result is optimal for
    the budget equal to its own cost, not in general for `budget`.
    """
    layers = _check_inputs(curves, costs, budget)
    width = max(curve.size for curve, _ in layers)
    dist = np.full((len(layers), width), np.inf)
    cost = np.zeros((len(layers), width))
    for l, (curve, c) in enumerate(layers):
        dist[l, : curve.size], cost[l, : c.size] = curve, c
    rows = np.arange(len(layers))

    def choose(lam: float) -> np.ndarray:
        obj = dist + lam * cost
        ties = obj <= obj.min(axis=1, keepdims=True)
        return np.argmin(np.where(ties, cost, np.inf), axis=1)

    def total(levels: np.ndarray) -> float:
        return float(cost[rows, levels].sum())

    levels = choose(0.0)
    if total(levels) <= budget:
        return _result(layers, levels, budget)
    # Above hi, any costlier level loses to the cheapest one by more than the whole distortion span.
    hi = 1.0
    for curve, c in layers:
        gaps = np.diff(np.unique(c))
        if gaps.size:
            hi = max(hi, 2.0 * (curve.max() - curve.min()) / gaps.min() + 1.0)
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if total(choose(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    return _result(layers, choose(hi), budget)
