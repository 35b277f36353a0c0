"""Stage 3 — allocate: pruned weights per layer meeting the FLOPs target (METHOD.md §8-9).

Methods come from the registry (core/methods.py): those with curves (dm3d, rd_measured) get the exact DP
(or the Lagrangian ablation) over the sensitivity curves with tap-aware level costs; baselines their
rule's magnitude-order prefixes matched to the same budget; dense prunes nothing.
Artifact: ``allocation.json`` with per-layer pruned counts, sparsity and MACs, totals and predictions.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


from ..adapters.layers import weight_view
from ..core.allocate import dp_allocate, lagrangian_allocate
from ..core.baselines import baseline_counts
from ..core.methods import OPTIONAL_SETTINGS, get_method
from ..core.levels import level_counts, max_level
from ..core.macs import level_costs, prefix_macs, prunable_budget, summarize_macs
from ..core.ranking import magnitude_order
from ..errors import InputError
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from . import calibrate, sensitivity
from .context import RunContext

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def cache_inputs(ctx: RunContext, calib: CacheEntry, sens: CacheEntry | None) -> dict:
    """Key of the allocation: calibrate and sensitivity keys, the pruning section (without the optional
    settings the method does not honour), code."""
    pruning = ctx.section("pruning")
    honours = get_method(pruning["method"]).honours
    for key in OPTIONAL_SETTINGS:  # settings the method does not read stay out of its key
        if key not in honours:
            pruning.pop(key)
    return {"calibrate": calib.key, "sensitivity": sens.key if sens else None, "pruning": pruning, "code": CODE}


def _curve_counts(ctx, costs, sens: CacheEntry):
    """DP / Lagrangian over delta_l(k) with level costs; returns pruned counts, orders, predicted D."""
    p = ctx.conf.pruning
    curves, orders = sensitivity.load(sens)
    num_levels = len(next(iter(curves.values()))) - 1
    names = list(curves)
    level_cost, level_curve = [], []
    for n in names:
        top = max_level(num_levels, costs[n].numel, p.min_density)
        level_cost.append(level_costs(costs[n], orders[n], num_levels, p.macs_mode)[: top + 1])
        level_curve.append(curves[n][: top + 1])
    budget = _budget(ctx, costs, names)
    solve = dp_allocate if p.allocator == "dp" else lagrangian_allocate
    kwargs = {"units": p.budget_units} if p.allocator == "dp" else {}
    try:
        alloc = solve(level_curve, level_cost, budget, **kwargs)
    except ValueError as e:
        raise InputError(f"pruning.flops_target={p.flops_target} cannot be met: {e}") from None
    counts = {n: int(level_counts(num_levels, costs[n].numel)[k]) for n, k in zip(names, alloc.levels)}
    return counts, orders, alloc.distortion, {n: int(k) for n, k in zip(names, alloc.levels)}


def _budget(ctx, costs, names) -> float:
    p = ctx.conf.pruning
    non_prunable = sum(c.dense_macs for n, c in costs.items() if n not in names)
    try:
        return prunable_budget([costs[n] for n in names], non_prunable, p.flops_target, p.denominator)
    except ValueError as e:
        raise InputError(f"pruning.flops_target={p.flops_target} cannot be met: {e}") from None


def _baseline_counts(ctx, costs):
    model = ctx.model()
    layers = ctx.prunable_layers(model)
    names = list(layers)
    views = [weight_view(layers[n]).detach() for n in names]
    orders = {n: magnitude_order(v) for n, v in zip(names, views)}
    if not get_method(ctx.conf.pruning.method).prunes:
        return {n: 0 for n in names}, orders
    budget = _budget(ctx, costs, names)
    try:
        result = baseline_counts(ctx.conf.pruning.method, views, [costs[n] for n in names], budget,
                                 macs_mode=ctx.conf.pruning.macs_mode)
    except ValueError as e:
        raise InputError(f"pruning.flops_target={ctx.conf.pruning.flops_target} cannot be met: {e}") from None
    return {n: int(c) for n, c in zip(names, result.counts)}, orders


def run(ctx: RunContext, calib: CacheEntry, sens: CacheEntry | None) -> CacheEntry:
    """Per-layer pruned counts under the FLOPs budget (DP over the curves, or a baseline's rule) from the
    calibrated costs: artifact ``allocation.json`` (layers, MACs, achieved ratio, predicted D)."""
    def compute(out: Path):
        p = ctx.conf.pruning
        costs = calibrate.load_costs(calib)
        predicted, chosen_levels = None, None
        if get_method(p.method).curves:
            counts, orders, predicted, chosen_levels = _curve_counts(ctx, costs, sens)
        else:
            counts, orders = _baseline_counts(ctx, costs)
        layers = {}
        for n, m in counts.items():
            c = costs[n]
            pruned_macs = (prefix_macs(c, orders[n])[m] if p.macs_mode == "tap_aware"
                           else c.dense_macs * (1 - m / c.numel))
            layers[n] = {"pruned": m, "numel": c.numel, "sparsity": m / c.numel,
                         "macs_dense": c.dense_macs, "macs_pruned": float(pruned_macs)}
            if chosen_levels is not None:
                layers[n]["level"] = chosen_levels[n]
        non_prunable = sum(c.dense_macs for n, c in costs.items() if n not in counts)
        summary = summarize_macs([costs[n] for n in counts], [v["macs_pruned"] for v in layers.values()], non_prunable)
        numel = sum(v["numel"] for v in layers.values())
        result = {"method": p.method, "flops_target": p.flops_target, "denominator": p.denominator,
                  "layers": layers, "macs": summary.as_dict(), "flops_ratio": summary.ratio_whole,
                  "flops_ratio_prunable": summary.ratio_prunable,
                  "sparsity": sum(v["pruned"] for v in layers.values()) / numel,
                  "predicted_distortion": predicted}
        (out / "allocation.json").write_text(json.dumps(result, indent=1))
        return {"flops_ratio": summary.ratio_whole}

    return ctx.cache.get_or_compute("allocate", cache_inputs(ctx, calib, sens), compute)


def load(entry: CacheEntry) -> dict:
    """The allocation (``allocation.json``) of an allocate entry."""
    return json.loads((entry.path / "allocation.json").read_text())
