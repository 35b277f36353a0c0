"""Figures for reports and notebooks; each writes a PNG atomically.

Figures are built as :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, without pyplot:
no global backend switch (a notebook keeps its inline backend) and no figure registry to leak into.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from .fileio import atomic_path


def _save(fig, out_png) -> Path:
    """Write ``fig`` to a temp file next to ``out_png`` and rename it into place."""
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return out


def reduction_ticks(values, decimals: int = 2) -> tuple[list[float], tuple[float, float]]:
    """Tick positions (the distinct reductions, rounded: 2.0000029x and 2x are one tick) and x limits
    padded by 15 % on the log scale, so that near-equal reductions sit together in the middle."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    if v.size == 0:
        return [], (0.5, 2.0)
    ticks = sorted({float(np.round(x, decimals)) for x in v})
    return ticks, (float(v.min()) / 1.15, float(v.max()) * 1.15)


def pareto_plot(df, out_png) -> Path:
    """mAP against achieved FLOPs reduction, one line per method, dense mAP as a horizontal line.

    ``df`` is a :func:`dm3d_exp.pipeline.report.summary_table` frame: columns ``method``, ``map`` (pruned mAP),
    ``map_dense`` and ``flops_reduction`` (dense/pruned; where it is missing, ``1 / flops_ratio``).
    The x axis is logarithmic (base 2) with a tick at each distinct reduction (:func:`reduction_ticks`);
    every point is labelled with its mAP and, where ``map_ci_low`` / ``map_ci_high`` are given, carries its
    frame-bootstrap 95 % interval as an error bar. Rows with method ``dense`` are drawn only as the baseline.
    """
    x = df["flops_reduction"].astype(float)
    if "flops_ratio" in df:
        x = x.fillna(1.0 / df["flops_ratio"].astype(float))
    data = df.assign(_x=x)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for method, g in data[data["method"] != "dense"].groupby("method", sort=True):
        g = g.dropna(subset=["_x", "map"]).sort_values("_x")
        line, = ax.plot(g["_x"], g["map"], marker="o", label=str(method))
        if {"map_ci_low", "map_ci_high"} <= set(g.columns) and g["map_ci_low"].notna().any():
            yerr = np.vstack([(g["map"] - g["map_ci_low"]).clip(lower=0), (g["map_ci_high"] - g["map"]).clip(lower=0)])
            ax.errorbar(g["_x"], g["map"], yerr=np.nan_to_num(yerr), fmt="none", ecolor=line.get_color(),
                        capsize=3, alpha=0.7)
        for xv, yv in zip(g["_x"], g["map"]):
            ax.annotate(f"{yv:.1f}", (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize="x-small",
                        color=line.get_color())
    dense = data["map_dense"].dropna()
    if len(dense):
        ax.axhline(float(dense.mean()), color="k", linestyle="--", linewidth=1, label="dense")
        ax.set_ylim(top=max(ax.get_ylim()[1], float(dense.mean()) * 1.05))  # the dense line inside the frame
    ax.set_xscale("log", base=2)
    ticks, limits = reduction_ticks(data.loc[data["method"] != "dense", "_x"])
    ax.set_xlim(*limits)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("FLOPs reduction (dense / pruned)")
    ax.set_ylabel("mAP")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_png)


def sensitivity_plot(curves: Mapping[str, np.ndarray], out_png, top: int = 8) -> Path:
    """Distortion curves delta_l(k) against sparsity k/K for the ``top`` most sensitive layers.

    A layer's sensitivity is the mean of its curve (the area under it); the y axis is logarithmic, so
    non-positive values (delta_l(0) = 0) are not drawn.
    """
    ranked = sorted(curves.items(), key=lambda kv: float(np.mean(kv[1])), reverse=True)[:top]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for name, curve in ranked:
        curve = np.asarray(curve, dtype=float)
        ax.plot(np.linspace(0.0, 1.0, len(curve)), curve, label=name)
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("sparsity k/K")
    ax.set_ylabel("output distortion")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small")
    return _save(fig, out_png)


def sparsity_bars(layer_sparsity: Mapping[str, float], out_png) -> Path:
    """Horizontal bars of per-layer sparsity (fraction of pruned weights), in the given layer order."""
    names = list(layer_sparsity)
    fig = Figure(figsize=(6.4, max(2.0, 0.22 * len(names) + 1.0)))
    ax = fig.subplots()
    ax.barh(np.arange(len(names)), [float(layer_sparsity[n]) for n in names])
    ax.set_yticks(np.arange(len(names)), names, fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("sparsity")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, out_png)
