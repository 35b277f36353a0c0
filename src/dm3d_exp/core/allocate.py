"""Layer-adaptive sparsity allocation under a FLOPs budget (METHOD.md section 8).

Choose one level k_l per layer minimising sum_l delta_l(k_l) subject to sum_l c_l(k_l) <= budget.
curves[l][k] = delta_l(k) and costs[l][k] = c_l(k) (e.g. tap-aware MACs); layers may have different
numbers of levels (e.g. truncated by a minimum density).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

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


# Relative slack before rounding a cost up to whole units: c / u that should be an integer may come out
# a few ulps above it (ceil would then charge a whole extra unit); a solution the slack lets over the true
# budget is re-solved with the strict ceiling.
_ROUNDING_SLACK = 1e-9


def _integer_grid(layers: Layers, budget: float, units: int) -> tuple[int, int] | None:
    """(g, B) when every cost is an integer (exact in float64), g is the gcd of the costs above each layer's
    cheapest and B = floor((budget - cheapest allocation) / g) <= units: those excess costs are then exactly
    whole units of g, and the discretised problem is the true one."""
    allc = np.concatenate([cost for _, cost in layers])
    if allc.max() >= 2.0**53 or np.any(allc != np.round(allc)):
        return None
    excess = np.unique(np.concatenate([cost - cost.min() for _, cost in layers]))
    g = math.gcd(*(int(e) for e in excess))
    spare = Fraction(budget) - sum(int(cost.min()) for _, cost in layers)
    if g == 0:  # every layer's levels cost the same: only distortion matters
        return 1, 0
    b = math.floor(spare / g)
    return (g, b) if b <= units else None


def _total_cost(layers: Layers, levels: Sequence[int]) -> float:
    return float(sum(cost[k] for (_, cost), k in zip(layers, levels)))


def _dp_levels(layers: Layers, int_costs: Sequence[np.ndarray], units: int) -> list[int]:
    """Exact optimum of the problem with integer costs ``int_costs`` (capped at units + 1; each layer has a
    level of cost 0) and budget ``units``."""
    candidates = [_pareto_candidates(curve, np.minimum(c, units + 1).astype(np.int64), units)
                  for (curve, _), c in zip(layers, int_costs)]
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
    return levels[::-1]


def _greedy_fill(layers: Layers, levels: Sequence[int], budget: float) -> list[int]:
    """Spend the budget the discretisation left unused: repeatedly move the one layer whose level change
    lowers the total distortion most among changes whose true (undiscretised) total cost stays <= budget.
    Only strictly improving moves are taken, so the distortion never increases; stops when none is left."""
    levels = [int(k) for k in levels]
    refused: set[tuple[int, int]] = set()
    while True:
        total = _total_cost(layers, levels)
        best = None
        for l, ((curve, cost), k0) in enumerate(zip(layers, levels)):
            gain = np.where(total - cost[k0] + cost <= budget, curve[k0] - curve, 0.0)
            gain[[k for ll, k in refused if ll == l]] = 0.0  # moves the summed float cost refused
            k = int(np.argmax(gain))
            if gain[k] > 0 and (best is None or gain[k] > best[0]):
                best = (float(gain[k]), l, k)
        if best is None:
            return levels
        _, l, k = best
        trial = levels[:l] + [k] + levels[l + 1:]
        if _total_cost(layers, trial) <= budget:  # the summed float cost, exactly as reported
            levels, refused = trial, set()
        else:
            refused.add((l, k))


def _grid_levels(layers: Layers, budget: float, units: int) -> list[int]:
    """DP levels on the finest grid the costs allow (see ``dp_allocate``), truly within ``budget``."""
    excess = [cost - cost.min() for _, cost in layers]  # each layer's cheapest level costs 0 units
    grid = _integer_grid(layers, budget, units)
    if grid is not None:
        g, b = grid
        return _dp_levels(layers, [np.rint(e / g) for e in excess], b)
    spare = budget - sum(float(cost.min()) for _, cost in layers)
    if spare > 0:
        scaled = [np.minimum(e / (spare / units), units + 1.0) for e in excess]
        for slack in (_ROUNDING_SLACK, 0.0):
            levels = _dp_levels(layers, [np.ceil(x - slack * np.maximum(x, 1.0)) for x in scaled], units)
            if _total_cost(layers, levels) <= budget:
                return levels
    # no spare budget, or float rounding of the excess costs: the best of each layer's cheapest levels
    return _dp_levels(layers, [np.where(e > 0, 1, 0) for e in excess], 0)


def dp_allocate(
    curves: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float, units: int = 10000
) -> Allocation:
    """Optimum of the discretised problem by dynamic programming (METHOD §8), then a greedy fill of the
    budget the rounding left unused.

    Every layer pays its cheapest level's cost; the DP allocates the spare budget S = budget - cheapest
    allocation over the excess costs e_l(k) = c_l(k) - min_k c_l(k) (so the cheapest allocation always fits).
    Discretisation: when every cost is an integer and B = floor(S / g) <= ``units`` for the excess costs' gcd
    g, the unit is g and the result is the exact optimum of the true problem. Otherwise excess costs become
    integer units ceil(e / u - slack), u = S / units (a 1e-9 relative slack so that e / u that should be an
    integer is not charged an extra unit; re-solved with the strict ceiling if that lets the true cost over
    the budget), so every discrete-feasible choice is truly feasible. dp_0[b] = 0,
    dp_l[b] = min_k dp_{l-1}[b - c_l(k)] + delta_l(k), answer dp_L[units], vectorised over b with a loop over
    the non-dominated levels; O(L * (K+1) * units) time. Backtracking recomputes the minimising level from the
    stored float64 tables dp_0..dp_{L-1} (O(L * units) memory), exact because the recomputed sums are bitwise
    the ones the forward pass minimised. ``_greedy_fill`` then only lowers the distortion, within the budget.
    Error bound: since ceil(e/u) <= e/u + 1, any choice with true cost <= budget - L * u is discrete-feasible,
    so the result is at least as good as the true optimum under the budget reduced by L * u <= L * budget / units.
    """
    if int(units) != units or units < 1:
        raise ValueError(f"units={units!r}: expected an integer >= 1")
    layers = _check_inputs(curves, costs, budget)
    return _result(layers, _greedy_fill(layers, _grid_levels(layers, budget, int(units)), budget), budget)


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
