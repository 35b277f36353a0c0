"""plots.py: each figure renders to a valid PNG, atomically (no temp file left behind)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dm3d_exp import plots


def test_figures_write_pngs(tmp_path, check_png):
    table = pd.DataFrame({"method": ["dense", "dm3d", "dm3d", "uniform"], "map": [0.7, 0.68, 0.6, 0.62],
                          "map_dense": [0.7] * 4, "flops_reduction": [1.0, 2.0, np.nan, 2.0],
                          "flops_ratio": [1.0, 0.5, 0.25, 0.5]})  # NaN reduction: taken as 1/ratio
    k = np.linspace(0.0, 1.0, 11)
    curves = {f"layer{i}": (i + 1) * k ** 2 for i in range(10)}  # delta(0) = 0 is masked on the log axis
    outs = [plots.pareto_plot(table, tmp_path / "a" / "pareto.png"),
            plots.sensitivity_plot(curves, tmp_path / "sens.png", top=3),
            plots.sparsity_bars({f"backbone.blocks.{i}.conv": i / 12 for i in range(12)}, tmp_path / "bars.png")]
    for out in outs:
        check_png(out)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bars.png", "pareto.png", "sens.png"]


def test_reduction_ticks_merge_near_equal_reductions_and_pad_the_axis():
    """2.0000029x and 2x (the same target, two methods) are one tick near the middle, not the two edges."""
    ticks, (lo, hi) = plots.reduction_ticks([2.0000029, 2.0, 3.03, 4.0, float("nan")])
    assert ticks == [2.0, 3.03, 4.0]
    assert lo < 2.0 / 1.1 and hi > 4.0 * 1.1
    ticks, (lo, hi) = plots.reduction_ticks([2.0000029, 2.0])
    assert ticks == [2.0] and lo < 2.0 / 1.1 < 2.0000029 * 1.1 < hi
