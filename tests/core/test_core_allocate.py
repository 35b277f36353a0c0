import itertools

import numpy as np
import pytest

from dm3d_exp.core.allocate import _check_inputs, _greedy_fill, dp_allocate, lagrangian_allocate


def brute_force(curves, costs, budget):
    """Min total distortion over all level combinations with total cost <= budget (inf if none)."""
    best = np.inf
    for levels in itertools.product(*(range(len(c)) for c in curves)):
        cost = sum(c[k] for c, k in zip(costs, levels))
        if cost <= budget + 1e-12:
            best = min(best, sum(d[k] for d, k in zip(curves, levels)))
    return best


def random_instance(rng, integer_costs):
    layers = rng.integers(1, 5)
    sizes = rng.integers(1, 7, layers)
    curves = [rng.uniform(0, 10, n) for n in sizes]
    if integer_costs:
        costs = [rng.integers(0, 11, n).astype(float) for n in sizes]
    else:
        costs = [rng.uniform(0, 10, n) for n in sizes]
    cheapest = sum(c.min() for c in costs)
    return curves, costs, cheapest


def check_consistent(result, curves, costs, budget):
    assert len(result.levels) == len(curves)
    assert result.cost == pytest.approx(sum(c[k] for c, k in zip(costs, result.levels)))
    assert result.distortion == pytest.approx(sum(d[k] for d, k in zip(curves, result.levels)))
    assert result.cost <= budget * (1 + 1e-12)


def test_dp_matches_brute_force_with_integer_costs():
    rng = np.random.default_rng(1)
    for _ in range(300):
        curves, costs, cheapest = random_instance(rng, integer_costs=True)
        budget = float(rng.integers(max(cheapest, 1), cheapest + 25))
        result = dp_allocate(curves, costs, budget, units=int(budget))  # one unit = one cost unit: exact
        check_consistent(result, curves, costs, budget)
        assert result.distortion == pytest.approx(brute_force(curves, costs, budget))


def test_dp_with_real_costs_is_feasible_and_within_the_discretisation_bound():
    rng = np.random.default_rng(2)
    for _ in range(300):
        curves, costs, cheapest = random_instance(rng, integer_costs=False)
        units = int(rng.integers(40, 200))
        budget = cheapest + rng.uniform(0.5, 20)
        try:
            result = dp_allocate(curves, costs, budget, units=units)
        except ValueError as err:  # only when rounding up makes the cheapest choice not fit
            assert "units" in str(err)
            continue
        check_consistent(result, curves, costs, budget)
        assert result.distortion >= brute_force(curves, costs, budget) - 1e-9
        shrunk = budget - len(curves) * budget / units
        assert result.distortion <= brute_force(curves, costs, shrunk) + 1e-9


def brute_force_costs(curves, costs, budget):
    """(min distortion, costs of every minimiser) over level combinations with total cost <= budget."""
    found = {}
    for levels in itertools.product(*(range(len(c)) for c in curves)):
        cost = sum(c[k] for c, k in zip(costs, levels))
        if cost <= budget:
            found.setdefault(sum(d[k] for d, k in zip(curves, levels)), set()).add(cost)
    best = min(found)
    return best, found[best]


def boundary_instances(seed, count, scale=1, max_cost=10):
    """Random small integer-cost instances whose optimum uses exactly the budget (every minimiser costs it):
    the budget is the cost of a random combination. ``scale`` multiplies every cost (and the budget)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        layers = int(rng.integers(2, 5))
        sizes = rng.integers(2, 7, layers)
        curves = [rng.uniform(0, 10, n) for n in sizes]
        costs = [rng.integers(0, max_cost + 1, n).astype(float) * scale for n in sizes]
        budget = float(sum(c[rng.integers(c.size)] for c in costs))
        if budget <= 0:
            continue
        best, used = brute_force_costs(curves, costs, budget)
        if used == {budget}:
            out.append((curves, costs, budget, best))
    return out


@pytest.mark.parametrize("scale, max_cost", [(1, 10), (7, 10), (3, 400)])
def test_dp_is_exact_with_integer_costs_whose_optimum_uses_the_whole_budget(scale, max_cost):
    """Default units (10000): the grid comes from the costs' gcd, not from budget / units (which charged
    ceil(c / u) > c / u and lost the optimum at the budget edge)."""
    instances = boundary_instances(11 + scale, 80, scale, max_cost)
    for curves, costs, budget, best in instances:
        result = dp_allocate(curves, costs, budget)
        check_consistent(result, curves, costs, budget)
        assert result.cost == budget and result.distortion == pytest.approx(best, abs=1e-12)


def test_dp_with_float_costs_never_exceeds_the_budget_at_its_edge():
    rng = np.random.default_rng(5)
    for _ in range(200):
        curves, costs, _ = random_instance(rng, integer_costs=False)
        budget = float(sum(c[rng.integers(c.size)] for c in costs))  # exactly reachable
        units = int(rng.choice([7, 50, 10000]))
        try:
            result = dp_allocate(curves, costs, budget, units=units)
        except ValueError as err:
            assert "units" in str(err)
            continue
        assert result.cost <= budget
        assert result.cost == sum(c[k] for c, k in zip(costs, result.levels))
        assert result.distortion >= brute_force(curves, costs, budget) - 1e-9
        shrunk = budget - len(curves) * budget / units
        assert result.distortion <= brute_force(curves, costs, shrunk) + 1e-9


def test_greedy_fill_spends_leftover_budget_and_never_increases_distortion():
    rng = np.random.default_rng(7)
    improved = 0
    for _ in range(200):
        curves, costs, cheapest = random_instance(rng, integer_costs=False)
        budget = cheapest + rng.uniform(0.5, 20)
        layers = _check_inputs(curves, costs, budget)
        start = [int(np.argmin(c)) for c in costs]  # cheapest levels: feasible, usually far from optimal
        filled = _greedy_fill(layers, start, budget)
        before = sum(d[k] for d, k in zip(curves, start))
        after = sum(d[k] for d, k in zip(curves, filled))
        assert after <= before and sum(c[k] for c, k in zip(costs, filled)) <= budget
        improved += after < before
    assert improved > 100


def test_dp_fills_a_coarse_grid():
    """units=1: after rounding up only one layer fits the grid; the fill spends the true leftover on the other."""
    curves, costs = [np.array([5.0, 0.0]), np.array([5.0, 0.0])], [np.array([0.0, 1.2]), np.array([0.0, 1.3])]
    result = dp_allocate(curves, costs, 2.6, units=1)
    assert result.levels == [1, 1] and result.cost == pytest.approx(2.5) and result.distortion == 0.0


def test_dp_at_a_budget_equal_to_the_cheapest_allocation_with_float_costs():
    """No spare budget: the best of each layer's cheapest levels, not 'expected more units'."""
    curves = [np.array([3.0, 1.0, 2.0]), np.array([4.0, 0.5, 9.0])]
    costs = [np.array([0.3, 0.1, 0.1]), np.array([0.7, 0.7, 0.2])]
    budget = 0.1 + 0.2
    result = dp_allocate(curves, costs, budget, units=10000)
    assert result.levels == [1, 2] and result.cost <= budget


def test_dp_raises_when_the_cheapest_allocation_exceeds_the_budget():
    curves, costs = [np.zeros(3), np.zeros(2)], [np.array([5.0, 3, 2]), np.array([4.0, 1])]
    with pytest.raises(ValueError, match="cheapest"):
        dp_allocate(curves, costs, 2.9)
    assert dp_allocate(curves, costs, 3.0, units=3).levels == [2, 1]


@pytest.mark.parametrize(
    "curves, costs, budget, units",
    [
        ([np.zeros(2)], [np.zeros(3)], 1.0, 10),
        ([np.zeros(2)], [np.array([1.0, -1.0])], 1.0, 10),
        ([np.array([0.0, np.nan])], [np.ones(2)], 1.0, 10),
        ([np.zeros(2)], [np.ones(2)], 0.0, 10),
        ([np.zeros(2)], [np.ones(2)], 1.0, 0),
        ([], [], 1.0, 10),
    ],
)
def test_dp_rejects_bad_input(curves, costs, budget, units):
    with pytest.raises(ValueError):
        dp_allocate(curves, costs, budget, units=units)


def test_lagrangian_is_feasible_and_optimal_for_its_own_cost():
    rng = np.random.default_rng(3)
    strictly_worse = 0
    for _ in range(300):
        curves, costs, cheapest = random_instance(rng, integer_costs=bool(rng.integers(2)))
        budget = cheapest + rng.uniform(0.5, 20)
        result = lagrangian_allocate(curves, costs, budget)
        check_consistent(result, curves, costs, budget)
        assert result.distortion == pytest.approx(brute_force(curves, costs, result.cost))
        strictly_worse += result.distortion > brute_force(curves, costs, budget) + 1e-9
    assert strictly_worse > 0  # it only reaches convex-hull points


def test_lagrangian_reaches_the_hull_point_at_the_budget():
    # one layer, convex curve: every level is on the hull, so the slope solver finds the exact optimum
    costs = [np.array([10.0, 7.0, 4.0, 2.0, 0.0])]
    curves = [np.array([0.0, 1.0, 3.0, 6.0, 11.0])]
    for budget, level in [(10.0, 0), (9.0, 1), (4.0, 2), (3.0, 3), (1.0, 4)]:
        assert lagrangian_allocate(curves, costs, budget).levels == [level]
        assert dp_allocate(curves, costs, budget).levels == [level]
