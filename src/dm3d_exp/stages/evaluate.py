"""Stage 5 — evaluate: detection metrics, measured MACs and measured output distortion (finetune-free).

Metrics come from mmdet3d's metric classes (KITTI format: the devkit-exact ``DevkitKittiMetric``).
Measured MACs recount sum_j n_j * nnz(W[j]) from the checkpoint's actual zeros (METHOD.md §7); the
measured distortion is D(dense, pruned) on held-out frames of the evaluation split (METHOD §2).
With ``eval.bootstrap`` > 0 (KITTI format), also a 95 % frame-bootstrap interval of mAP and the
per-resample values (:mod:`dm3d_exp.kitti.bootstrap`). Artifact: ``metrics.json``.
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..adapters.data import batches, build_metric, evaluate_detector, headline_map
from ..adapters.layers import prunable_modules, weight_view
from ..adapters.sensitivity import DistortionMeter, additivity_check
from ..core.levels import level_counts
from ..pipeline.cache import CacheEntry, file_sha256
from ..pipeline.code_version import code_version
from ..progress import progress_bar
from . import calibrate, sensitivity
from .context import RunContext, seeded_indices
from .sensitivity import fisher_spec

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def cache_inputs(ctx: RunContext, checkpoint: str | None, calib: CacheEntry) -> dict:
    return {"checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None, "calibrate": calib.key,
            "detector": ctx.detector_identity, "dataset": ctx.dataset_identity, "eval": ctx.section("eval"),
            "distortion": asdict(fisher_spec(ctx).distortion),
            "code": CODE}


def _distortion_frames(conf, n_split: int) -> int:
    """eval.distortion_frames, reduced (with a warning) to the split's size."""
    if conf.distortion_frames > n_split:
        warnings.warn(f"eval.distortion_frames={conf.distortion_frames} is larger than the {conf.split} split: "
                      f"measuring the distortion on all {n_split} frames", stacklevel=2)
        return n_split
    return conf.distortion_frames


def measured_macs(model, costs) -> dict[str, float]:
    """Whole-model MACs from the actual non-zeros of every viewable layer (tap-aware)."""
    pruned = sum(costs[n].pruned_macs(weight_view(m).detach() != 0) for n, m in prunable_modules(model))
    dense = sum(c.dense_macs for c in costs.values())
    return {"macs_dense": dense, "macs_pruned": pruned, "flops_ratio": pruned / dense}


def run(ctx: RunContext, checkpoint: str | None, calib: CacheEntry, tag: str) -> CacheEntry:
    def compute(out: Path):
        conf = ctx.conf.eval
        model = ctx.model(checkpoint)
        ds = ctx.dataset(conf.split)
        indices = seeded_indices(len(ds), conf.num_frames, 0, "eval.num_frames")
        metric = build_metric(ctx.mmdet3d_cfg, ctx.data_root, ctx.conf.dataset.format, conf.split,
                              ctx.conf.dataset.classes, conf.bootstrap)
        with progress_bar(len(indices), f"evaluate ({tag})", ctx.conf.progress) as bar:
            raw = evaluate_detector(model, ds, indices, metric, conf.batch_size, progress=bar.advance)
        metrics = {k.split("/", 1)[1] if k.startswith("Kitti metric/") else k: float(v) for k, v in raw.items()}
        metrics["mAP"] = headline_map(metrics)
        result = {"eval": metrics, "cost": measured_macs(model, calibrate.load_costs(calib)),
                  "frames": len(indices)}
        values = getattr(metric, "bootstrap_values", None)
        if values is not None:  # the same seeded resamples for every model: paired differences are valid
            result["bootstrap"] = {"resamples": len(values), "mAP": [float(v) for v in values]}
        if conf.distortion_frames:
            held_out = seeded_indices(len(ds), _distortion_frames(conf, len(ds)), 1)
            dense = ctx.model()
            meter = DistortionMeter(dense, list(batches(dense, ds, held_out)), fisher_spec(ctx).distortion)
            result["distortion_measured"] = meter(model)
        (out / "metrics.json").write_text(json.dumps(result, indent=1))
        return {"mAP": metrics["mAP"]}

    return ctx.cache.get_or_compute("evaluate", cache_inputs(ctx, checkpoint, calib), compute)


def additivity(ctx: RunContext, sens: CacheEntry) -> CacheEntry:
    """Additivity diagnostic (METHOD §3): for random multi-layer allocations (every layer at a uniformly
    random level of the curves), the sum of single-layer D vs the joint D on held-out frames."""
    conf = ctx.conf.eval

    def compute(out: Path):
        curves, orders = sensitivity.load(sens)
        model = ctx.model()
        layers = {n: m for n, m in ctx.prunable_layers(model).items() if n in orders}
        ds = ctx.dataset(conf.split)
        held_out = seeded_indices(len(ds), _distortion_frames(conf, len(ds)), 1)
        meter = DistortionMeter(model, list(batches(model, ds, held_out)), fisher_spec(ctx).distortion)
        rng = np.random.default_rng(ctx.conf.seed)
        allocations = []
        for _ in range(conf.additivity_checks):
            allocations.append({n: int(level_counts(len(curves[n]) - 1, layers[n].weight.numel())[
                rng.integers(0, len(curves[n]))]) for n in layers})
        rows = additivity_check(meter, layers, orders, allocations)
        (out / "additivity.json").write_text(json.dumps(rows, indent=1))
        ratios = [r["ratio"] for r in rows]
        return {"ratio_mean": float(np.mean(ratios)), "ratio_min": float(np.min(ratios)),
                "ratio_max": float(np.max(ratios))}

    inputs = {"sensitivity": sens.key, "eval": ctx.section("eval"), "seed": ctx.conf.seed, "code": CODE}
    return ctx.cache.get_or_compute("additivity", inputs, compute)


def load(entry: CacheEntry) -> dict:
    return json.loads((entry.path / "metrics.json").read_text())
