"""Stage 5 — evaluate: detection metrics, measured MACs and measured output distortion (finetune-free).

Metrics come from mmdet3d's metric classes (KITTI format: the devkit-exact ``DevkitKittiMetric``).
Measured MACs recount sum_j n_j * nnz(W[j]) from the checkpoint's actual zeros (METHOD.md §7); the
measured distortion is D(dense, pruned) on held-out frames of the evaluation split, disjoint from the
calibration frames (METHOD §2), an entry of its own (``distortion``) so that the metrics' key holds only
what the metrics depend on.
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

from ..adapters.data import batches
from ..adapters.evaluation import build_metric, evaluate_detector, headline_map
from ..adapters.layers import prunable_modules, weight_view
from ..adapters.sensitivity import DistortionMeter, additivity_check
from ..core.levels import level_counts
from ..fileio import file_sha256
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from ..progress import progress_bar
from . import calibrate, sensitivity
from .context import RunContext, seeded_indices
from .sensitivity import fisher_spec

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


METRIC_KEYS = ("split", "num_frames", "batch_size", "bootstrap", "max_detections")  # the eval keys the metrics depend on


def cache_inputs(ctx: RunContext, checkpoint: str | None, calib: CacheEntry) -> dict:
    """Metrics depend on the checkpoint's weights, the eval settings that select frames and resamples, and the MACs
    reference (calibrate's per-layer costs, by content): not on calibration size, lambdas or objective."""
    conf = ctx.section("eval")
    return {"weights_sha256": ctx.weights_identity(checkpoint), "detector": ctx.detector_identity, "dataset": ctx.dataset_identity,
            "eval": {k: conf[k] for k in METRIC_KEYS}, "costs_sha256": file_sha256(calib.path / "layers.json"),
            "numerics": ctx.numerics_identity, "code": CODE}


def held_out_frames(ctx: RunContext, calib: CacheEntry, n_split: int) -> list[int]:
    """``eval.distortion_frames`` frames of the eval split, seeded, disjoint from the calibration frames
    when calibration uses the same split (reduced, with a warning, to the frames that are left)."""
    conf = ctx.conf.eval
    frames = calibrate.load_frames(calib)
    used = set(frames["calib"]) if frames["split"] == conf.split else set()
    free = [i for i in range(n_split) if i not in used]
    n = conf.distortion_frames
    if n > len(free):
        warnings.warn(f"eval.distortion_frames={n} is larger than the {len(free)} frames of the {conf.split} "
                      f"split outside the calibration frames: measuring the distortion on those {len(free)}",
                      stacklevel=2)
        n = len(free)
    picked = [free[i] for i in seeded_indices(len(free), n, 1)]
    assert not used & set(picked), "held-out distortion frames overlap the calibration frames"
    return picked


def measured_macs(model, costs) -> dict[str, float]:
    """Whole-model MACs from the actual non-zeros of every viewable layer (tap-aware)."""
    pruned = sum(costs[n].pruned_macs(weight_view(m).detach() != 0) for n, m in prunable_modules(model))
    dense = sum(c.dense_macs for c in costs.values())
    return {"macs_dense": dense, "macs_pruned": pruned, "flops_ratio": pruned / dense}


def run(ctx: RunContext, checkpoint: str | None, calib: CacheEntry, tag: str) -> CacheEntry:
    """Metrics (``metrics.json``: eval metrics, measured cost, frame count, bootstrap resamples) of
    ``checkpoint`` (None: the detector's) on the eval split, cached by :func:`cache_inputs`."""
    def compute(out: Path):
        conf = ctx.conf.eval
        model = ctx.model(checkpoint)
        ds = ctx.dataset(conf.split)
        indices = seeded_indices(len(ds), conf.num_frames, 0, "eval.num_frames")
        metric = build_metric(ctx.mmdet3d_cfg, ctx.data_root, ctx.conf.dataset.format, conf.split,
                              ctx.conf.dataset.classes, conf.bootstrap)
        with progress_bar(len(indices), f"evaluate ({tag})", ctx.conf.progress) as bar:
            raw, capped = evaluate_detector(model, ds, indices, metric, conf.batch_size, progress=bar.advance,
                                            max_detections=conf.max_detections)
        if capped:
            warnings.warn(f"evaluate ({tag}): {capped} of {len(indices)} frames had more than eval.max_detections="
                          f"{conf.max_detections} detections; their lowest-scoring ones were dropped", stacklevel=2)
        metrics = {k.split("/", 1)[1] if k.startswith("Kitti metric/") else k: float(v) for k, v in raw.items()}
        metrics["mAP"] = headline_map(metrics)
        metrics["capped_frames"] = float(capped)
        result = {"eval": metrics, "cost": measured_macs(model, calibrate.load_costs(calib)),
                  "frames": len(indices)}
        values = getattr(metric, "bootstrap_values", None)
        if values is not None:  # the same seeded resamples for every model: paired differences are valid
            result["bootstrap"] = {"resamples": len(values), "mAP": [float(v) for v in values]}
        (out / "metrics.json").write_text(json.dumps(result, indent=1))
        return {"mAP": metrics["mAP"]}

    return ctx.cache.get_or_compute("evaluate", cache_inputs(ctx, checkpoint, calib), compute)


def distortion(ctx: RunContext, checkpoint: str, calib: CacheEntry) -> CacheEntry:
    """Measured D(dense, pruned) (METHOD §2) of ``checkpoint`` on held-out frames of the eval split
    (:func:`held_out_frames`), its own entry: ``meta()['distortion']``."""
    def compute(out: Path):
        ds = ctx.dataset(ctx.conf.eval.split)
        frames = held_out_frames(ctx, calib, len(ds))
        dense = ctx.model()
        meter = DistortionMeter(dense, list(batches(dense, ds, frames)), fisher_spec(ctx).distortion)
        return {"distortion": meter(ctx.model(checkpoint)), "frames": frames}

    inputs = {"weights_sha256": ctx.weights_identity(checkpoint), "detector": ctx.detector_identity,
              "dataset": ctx.dataset_identity, "split": ctx.conf.eval.split,
              "distortion_frames": ctx.conf.eval.distortion_frames, "calib_frames": calibrate.load_frames(calib),
              "distortion": asdict(fisher_spec(ctx).distortion), "numerics": ctx.numerics_identity, "code": CODE}
    return ctx.cache.get_or_compute("distortion", inputs, compute)


def additivity(ctx: RunContext, sens: CacheEntry, calib: CacheEntry) -> CacheEntry:
    """Additivity diagnostic (METHOD §3): for random multi-layer allocations (every layer at a uniformly
    random level of the curves), the sum of single-layer D vs the joint D on held-out frames."""
    conf = ctx.conf.eval

    def compute(out: Path):
        curves, orders = sensitivity.load(sens)
        model = ctx.model()
        layers = {n: m for n, m in ctx.prunable_layers(model).items() if n in orders}
        ds = ctx.dataset(conf.split)
        held_out = held_out_frames(ctx, calib, len(ds))
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

    inputs = {"sensitivity": sens.key, "eval": ctx.section("eval"), "calib_frames": calibrate.load_frames(calib),
              "seed": ctx.conf.seed, "code": CODE}
    return ctx.cache.get_or_compute("additivity", inputs, compute)


def load(entry: CacheEntry) -> dict:
    """``metrics.json`` of an evaluate entry: eval metrics, measured cost, frames, bootstrap resamples."""
    return json.loads((entry.path / "metrics.json").read_text())
