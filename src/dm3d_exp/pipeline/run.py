"""One job: run the stages up to ``conf.stage`` through the cache, then summarise, track and print.

summary.json / MLflow metrics (ARCHITECTURE.md): ``dense/eval/*`` and ``pruned/eval/*`` (mAP and the
per-class AP keys), ``pruned/cost/*`` (flops_ratio, flops_reduction, macs_dense, macs_pruned,
params_nonzero, sparsity), ``cost/flops_target``, ``distortion/predicted``, ``distortion/measured``,
``time/<stage>_s`` (wall time spent in this job; stages include ``distortion``), ``cache/<stage>_hit`` and, with recovery,
``pruned/eval/delta_mAP_ci_low/high`` (paired frame-bootstrap 95 % interval of pruned - dense mAP),
``pruned/recovery/*`` (layers by status, mean relative calibration error zeroed vs reconstructed, the
seconds of reconstruction and statistics); ``allocation/reconstruction_aware`` (1 when the curves measured
reconstructed perturbations, METHOD §11.3).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.methods import get_method
from ..fileio import atomic_write_bytes
from ..kitti.bootstrap import paired_interval
from ..stages import allocate, calibrate, evaluate, prune, recover, sensitivity
from ..stages.context import RunContext
from ..schema import RunConf
from ..store.cache import CacheEntry

ORDER = ("calibrate", "sensitivity", "allocate", "prune", "recover", "evaluate")


class _Timeline:
    """Wall time and cache hit per stage of this job; ``on_stage(metrics)`` gets ``time/<stage>_s`` and
    ``cache/<stage>_hit`` as each stage finishes (the job's MLflow run shows progress live)."""

    def __init__(self, on_stage: Callable[[dict], None] | None = None):
        self.seconds: dict[str, float] = {}
        self.hits: dict[str, bool] = {}
        self.on_stage = on_stage

    def run(self, stage: str, fn, *args) -> CacheEntry:
        start = time.perf_counter()
        entry = fn(*args)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.hits[stage] = self.hits.get(stage, True) and entry.hit
        if self.on_stage:
            self.on_stage({f"time/{stage}_s": self.seconds[stage], f"cache/{stage}_hit": float(self.hits[stage])})
        return entry


def _wanted(conf: RunConf, stage: str) -> bool:
    return conf.stage == "all" or ORDER.index(stage) <= ORDER.index(conf.stage)


def run_stages(conf: RunConf, on_stage: Callable[[dict], None] | None = None
               ) -> tuple[dict, dict[str, CacheEntry], _Timeline]:
    """Execute the stages the config asks for; returns (summary metrics, cache entries, timeline).
    ``on_stage`` receives each finished stage's time and cache-hit metrics."""
    ctx = RunContext(conf)
    tl = _Timeline(on_stage)
    entries: dict[str, CacheEntry] = {}
    entries["calibrate"] = calib = tl.run("calibrate", calibrate.run, ctx)
    sens = None
    if _wanted(conf, "sensitivity") and get_method(conf.pruning.method).curves:
        entries["sensitivity"] = sens = tl.run("sensitivity", sensitivity.run, ctx, calib)
    if not _wanted(conf, "allocate"):
        return {}, entries, tl
    entries["allocate"] = alloc = tl.run("allocate", allocate.run, ctx, calib, sens)
    if not _wanted(conf, "prune"):
        return _summary(conf, allocate.load(alloc), None, None, None, tl), entries, tl
    entries["prune"] = pruned = tl.run("prune", prune.run, ctx, alloc, sens)
    prunes = get_method(conf.pruning.method).prunes
    ckpt = str(pruned.path / "pruned.pth") if prunes else ctx.checkpoint
    recovered = None
    if _wanted(conf, "recover") and conf.recovery.enabled and prunes:
        entries["recover"] = recovered = tl.run("recover", recover.run, ctx, pruned, calib)
        ckpt = str(recovered.path / "recovered.pth")
    if not _wanted(conf, "evaluate"):
        return _summary(conf, allocate.load(alloc), pruned, None, None, tl, recovered), entries, tl
    entries["evaluate_dense"] = dense_eval = tl.run("evaluate", evaluate.run, ctx, ctx.checkpoint, calib, "dense")
    entries["evaluate"] = pruned_eval = tl.run("evaluate", evaluate.run, ctx, ckpt, calib, "pruned")
    dist = add = None
    if conf.eval.distortion_frames and prunes:
        entries["distortion"] = dist = tl.run("distortion", evaluate.distortion, ctx, ckpt, calib)
    if conf.eval.additivity_checks and sens is not None:
        entries["additivity"] = add = tl.run("additivity", evaluate.additivity, ctx, sens, calib)
    summary = _summary(conf, allocate.load(alloc), pruned, evaluate.load(dense_eval), evaluate.load(pruned_eval), tl,
                       recovered)
    if dist is not None:
        summary["distortion/measured"] = dist.meta()["distortion"]
    if add is not None:
        summary.update({f"distortion/additivity_{k}": v for k, v in add.meta().items() if k.startswith("ratio_")})
    if sens is not None:
        summary["allocation/reconstruction_aware"] = float(sens.meta().get("perturbation") == "reconstructed")
    return summary, entries, tl


def _summary(conf: RunConf, plan: dict, pruned: CacheEntry | None, dense_eval: dict | None,
             pruned_eval: dict | None, tl: _Timeline, recovered: CacheEntry | None = None) -> dict:
    out: dict[str, float] = {"cost/flops_target": conf.pruning.flops_target}
    macs = plan["macs"]
    ratio = pruned_eval["cost"]["flops_ratio"] if pruned_eval else plan["flops_ratio"]
    out.update({
        "pruned/cost/flops_ratio": ratio,
        "pruned/cost/flops_reduction": 1.0 / ratio if ratio > 0 else float("inf"),
        "pruned/cost/macs_dense": pruned_eval["cost"]["macs_dense"] if pruned_eval else macs["macs_dense_whole"],
        "pruned/cost/macs_pruned": pruned_eval["cost"]["macs_pruned"] if pruned_eval else macs["macs_pruned_whole"],
        "pruned/cost/flops_ratio_prunable": plan["flops_ratio_prunable"],
        "pruned/cost/sparsity": plan["sparsity"],
        "allocation/flops_ratio": plan["flops_ratio"],
    })
    if plan.get("predicted_distortion") is not None:
        out["distortion/predicted"] = plan["predicted_distortion"]
    if pruned is not None:
        meta = pruned.meta()
        out["pruned/cost/params_nonzero"] = meta["params_nonzero"]
        out["pruned/cost/params_total"] = meta["params_total"]
    if recovered is not None:
        out.update({f"pruned/recovery/{k}": float(v) for k, v in recovered.meta().items()
                    if k.startswith(("layers", "error_", "seconds_", "bn_", "statcorr_")) and isinstance(v, (int, float))})
    for prefix, ev in (("dense", dense_eval), ("pruned", pruned_eval)):
        if ev:
            out.update({f"{prefix}/eval/{k}": v for k, v in ev["eval"].items()})
    if dense_eval and pruned_eval and "bootstrap" in dense_eval and "bootstrap" in pruned_eval:
        low, high = paired_interval(np.asarray(pruned_eval["bootstrap"]["mAP"]), np.asarray(dense_eval["bootstrap"]["mAP"]))
        out["pruned/eval/delta_mAP_ci_low"], out["pruned/eval/delta_mAP_ci_high"] = low, high
    out.update({f"time/{s}_s": v for s, v in tl.seconds.items()})
    out.update({f"cache/{s}_hit": float(v) for s, v in tl.hits.items()})
    return out


HEADLINE_PREFIX = "Summary/"  # MLflow sorts its chart sections by prefix, ASCII: a capital letter comes first
HEADLINE = {  # headline key (under HEADLINE_PREFIX) -> summary key
    "mAP": "pruned/eval/mAP", "mAP_dense": "dense/eval/mAP",
    "mAP_delta_ci_low": "pruned/eval/delta_mAP_ci_low", "mAP_delta_ci_high": "pruned/eval/delta_mAP_ci_high",
    "flops_reduction": "pruned/cost/flops_reduction", "sparsity": "pruned/cost/sparsity",
    "D_predicted": "distortion/predicted", "D_measured": "distortion/measured",
}


def headline_metrics(summary: dict, classes) -> dict[str, float]:
    """The few numbers a reader looks for first, as ``Summary/<name>`` so that MLflow shows them as its first
    chart section (the long tail stays grouped by its lowercase prefixes): pruned and dense mAP, their
    difference and its paired bootstrap interval, moderate 3D AP per class, FLOPs reduction, sparsity,
    predicted and measured D, total stage time. :func:`run_description` reads the unprefixed names."""
    out = {short: summary[key] for short, key in HEADLINE.items() if key in summary}
    if "mAP" in out and "mAP_dense" in out:
        out["mAP_delta"] = out["mAP"] - out["mAP_dense"]
    for c in classes:
        key = f"pruned/eval/{c}/3d/moderate/R40"
        if key in summary:
            out[f"AP_moderate_{c}"] = summary[key]
    times = [v for k, v in summary.items() if k.startswith("time/")]
    if times:
        out["time_total_s"] = float(sum(times))
    return out


def headline_for_mlflow(head: dict) -> dict[str, float]:
    return {HEADLINE_PREFIX + k: v for k, v in head.items()}


def run_description(conf: RunConf, head: dict) -> str:
    """Markdown for the run's MLflow description: what ran and its headline numbers."""
    lines = [f"**{conf.pruning.method}** at {conf.pruning.flops_target:g} of the dense FLOPs on "
             f"{conf.detector.name} / {conf.dataset.name}, recovery {conf.recovery.method}"
             + ("" if conf.recovery.statistics == "none" else f" + {conf.recovery.statistics}")]
    if "mAP" in head:
        ci = (f" (95 % frame-bootstrap interval of the difference {head['mAP_delta_ci_low']:+.1f} to "
              f"{head['mAP_delta_ci_high']:+.1f})" if "mAP_delta_ci_low" in head else "")
        dense = f" vs dense {head['mAP_dense']:.1f}, {head['mAP_delta']:+.1f}{ci}" if "mAP_dense" in head else ""
        lines.append(f"mAP **{head['mAP']:.1f}**{dense}")
    if "flops_reduction" in head:
        lines.append(f"{head['flops_reduction']:.2f}x fewer FLOPs, sparsity {head['sparsity']:.3f}")
    return "\n\n".join(lines)


def write_summary(path: Path, summary: dict, conf: RunConf, entries: dict[str, CacheEntry]) -> None:
    """summary.json: the metrics plus the config and the cache entries (key, path) of this job."""
    doc = dict(summary)
    doc["config"] = asdict(conf)
    doc["artifacts"] = {name: {"key": e.key, "path": str(e.path)} for name, e in entries.items()}
    atomic_write_bytes(path, json.dumps(doc, indent=1, default=str).encode())
