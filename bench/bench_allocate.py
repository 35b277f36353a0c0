"""Benchmark of the DP allocator (METHOD.md section 8): L = 60 layers, K = 1000 (1001 levels), 10,000 units.

Target: under 2 s per allocation. Writes bench/results/allocate.json (temp file, then atomic rename) with
the best-of-repeats wall time of each case and its ratio to the target.

    python bench/bench_allocate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dm3d_exp.core.allocate import dp_allocate, lagrangian_allocate

TARGET_S = 2.0
LAYERS, LEVELS, UNITS = 60, 1000, 10_000
RESULT = Path(__file__).resolve().parent / "results" / "allocate.json"


def realistic_case(rng: np.random.Generator, target: float) -> tuple[list, list, float]:
    """Convex increasing curves, decreasing costs dense_l * (1 - s)^p_l (dense MACs log-uniform over two decades),
    budget = target * total dense MACs."""
    s = np.linspace(0.0, 1.0, LEVELS + 1)
    dense = 10.0 ** rng.uniform(6, 8, LAYERS)
    curves = [rng.uniform(0.1, 10.0) * s ** rng.uniform(1.5, 4.0) for _ in range(LAYERS)]
    costs = [d * (1.0 - s) ** rng.uniform(0.8, 1.25) for d in dense]
    return curves, costs, target * float(dense.sum())


def worst_case(rng: np.random.Generator) -> tuple[list, list, float]:
    """Every level non-dominated with a distinct small integer cost: each of the 60,060 candidates spans ~all units."""
    costs = [np.arange(LEVELS, -1, -1, dtype=np.float64) for _ in range(LAYERS)]
    curves = [np.sort(rng.uniform(0.0, 1.0, LEVELS + 1)).cumsum() for _ in range(LAYERS)]
    return curves, costs, float(UNITS)


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {f"realistic_target_{t}": realistic_case(rng, t) for t in (0.1, 0.3, 0.5)}
    cases["worst_all_levels_pareto"] = worst_case(rng)
    rows = []
    for name, (curves, costs, budget) in cases.items():
        dp_s, dp = best_time(lambda: dp_allocate(curves, costs, budget, units=UNITS), args.repeats)
        lg_s, lg = best_time(lambda: lagrangian_allocate(curves, costs, budget), args.repeats)
        rows.append(
            {
                "case": name,
                "layers": LAYERS,
                "levels": LEVELS + 1,
                "units": UNITS,
                "dp_s": dp_s,
                "dp_ratio_to_target": dp_s / TARGET_S,
                "dp_distortion": dp.distortion,
                "dp_cost_over_budget": dp.cost / budget,
                "lagrangian_s": lg_s,
                "lagrangian_distortion": lg.distortion,
                "lagrangian_cost_over_budget": lg.cost / budget,
            }
        )
        print(f"{name:28s} dp {dp_s:.3f} s ({dp_s / TARGET_S:.2f} x target)  lagrangian {lg_s:.3f} s")
    report = {
        "benchmark": "dp_allocate",
        "target_s": TARGET_S,
        "repeats": args.repeats,
        "max_dp_ratio_to_target": max(r["dp_ratio_to_target"] for r in rows),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cases": rows,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_name(RESULT.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, RESULT)
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
