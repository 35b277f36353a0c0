"""What the pipeline's own steps cost (issue 13), as ratios measured side by side in one run.

Every measurement is one subprocess (torch threads = 1, the same frames of the train split, the shipped
checkpoint): wall time of the step, and its peak memory as the growth of the process's peak RSS over the
RSS after model and batches are built. The reference is the floor of the Fisher stage: N frames x one
forward + backward of the probe scalar w.r.t. every prunable weight (``fwdbwd``; with R probes, one forward
and R backward passes per frame). Run it on an otherwise idle machine: the ratios are of wall times.

Ratios (goal in brackets):
- fisher curves / fwdbwd at R = 1 and 4 probes per frame, K = 1000 (goal <= 1.3);
- reconstruction-aware curves (the default DM3D sensitivity) / fwdbwd; reconstruction and statcorr of a
  uniformly 75 %-sparse model on the reconstruction frames / the Fisher stage (<= 2);
- measured curves (ICCV'23 ablation, L x (K+1) x N forwards) / fisher curves at equal N and K (``--measured-k``);
- DP allocation for the detector's L at K = 1000, 10,000 units;
- evaluation time per frame of a damaged model (every layer zeroed to 50 % density by magnitude) and of a
  flooded one (class-score biases +10: every position a confident detection, the worst case the heads'
  test_cfg caps allow) / the dense model's, with the detections per frame each passes to the metric;
- peak memory of each step / peak memory of fwdbwd.
Growth (fisher, R = 1): N, K, model (PointPillars, CenterPoint, CenterPoint with every width doubled,
random init) and frame size (points kept per frame), as a table and a log-log PNG.
Results: bench/results/stage_costs.json and stage_costs.png (with the machine).

    python bench/bench_stage_costs.py [--frames 32] [--measured-k 20] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DETECTORS = ("pointpillars_synth", "centerpoint_voxel_synth")
WIDE = "centerpoint_voxel_synth_wide"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _widen(cfg) -> None:
    """Double every width of the synthetic CenterPoint config (sparse encoder, BEV backbone, neck, head)."""
    m = cfg.model
    enc = m.pts_middle_encoder
    enc.base_channels = 2 * enc.get("base_channels", 16)
    enc.encoder_channels = tuple(tuple(2 * c for c in block) for block in enc.encoder_channels)
    enc.output_channels *= 2
    m.pts_backbone.in_channels *= 2
    m.pts_backbone.out_channels = [2 * c for c in m.pts_backbone.out_channels]
    m.pts_neck.in_channels = [2 * c for c in m.pts_neck.in_channels]
    m.pts_neck.out_channels = [2 * c for c in m.pts_neck.out_channels]
    m.pts_bbox_head.in_channels *= 2
    m.pts_bbox_head.share_conv_channel *= 2
    m.pts_bbox_head.separate_head.head_conv *= 2


class _Thinned:
    """A dataset whose frames keep every ``step``-th point (frame-size growth)."""

    def __init__(self, ds, step: int):
        self.ds, self.step = ds, step

    def __getitem__(self, i):
        item = self.ds[i]
        item["inputs"]["points"] = item["inputs"]["points"][:: self.step]
        return item


def child(args) -> dict:
    """One measurement (runs in its own process)."""
    import numpy as np
    import torch

    from _compose import compose
    from dm3d_exp.adapters.batchnorm import correct_statistics
    from dm3d_exp.adapters.data import batches
    from dm3d_exp.adapters.detector import build_detector
    from dm3d_exp.adapters.layers import weight_view
    from dm3d_exp.adapters.reconstruct import ReconstructionSpec, reconstruct_model
    from dm3d_exp.adapters.sensitivity import (FisherSpec, _frame_gradients, fisher_curves, intra_layer_orders,
                                               measured_layer_curves, reconstructed_fisher_curves)
    from dm3d_exp.core.allocate import dp_allocate
    from dm3d_exp.stages.context import RunContext, seeded_indices
    from dm3d_exp.stages.sensitivity import fisher_spec

    torch.set_num_threads(1)
    detector = DETECTORS[1] if args.detector == WIDE else args.detector
    ctx = RunContext(compose([f"detector={detector}"]))
    if args.detector == WIDE:
        cfg = ctx.mmdet3d_cfg.copy()
        _widen(cfg)
        model = build_detector(cfg, None)
    else:
        model = ctx.model()
    layers = ctx.prunable_layers(model)
    ds = ctx.dataset("train")
    if args.thin > 1:
        ds = _Thinned(ds, args.thin)
    ids = seeded_indices(len(ctx.dataset("train")), args.frames, 0)
    data = list(batches(model, ds, ids))
    spec = fisher_spec(ctx)
    spec = FisherSpec(**{**spec.__dict__, "num_levels": args.levels, "probes_per_frame": args.probes})
    orders = intra_layer_orders(model, layers, data, spec)
    recon_spec = ReconstructionSpec(damping=ctx.conf.recovery.damping, max_sites=ctx.conf.recovery.max_sites)
    recon_data = data[: ctx.conf.recovery.num_frames or len(data)]
    setup_rss = _rss_mb()
    start = time.perf_counter()
    extra: dict = {}
    if args.phase == "fwdbwd":
        for _ in _frame_gradients(model, layers, data, spec, spec.probe, args.probes, torch.Generator().manual_seed(0)):
            pass
    elif args.phase == "fisher":
        fisher_curves(model, layers, data, spec, orders)
    elif args.phase == "aware":
        reconstructed_fisher_curves(model, layers, data, spec, orders, recon_data, recon_spec,
                                    ctx.conf.sensitivity.coarse_levels)
    elif args.phase == "measured":
        measured_layer_curves(model, layers, data, spec, orders)
    elif args.phase in ("recon", "statcorr"):
        dense = ctx.model()
        reconstruct_model(model, layers, _masks(layers, orders, 0.75), recon_data, recon_spec)
        if args.phase == "statcorr":
            setup_rss = _rss_mb()
            start = time.perf_counter()
            correct_statistics(model, dense, recon_data)
    elif args.phase == "eval":  # dense, or every layer zeroed by magnitude to 1 - damaged density
        from dm3d_exp.adapters.evaluation import build_metric, evaluate_detector

        if args.damaged:
            with torch.no_grad():
                for n, keep in _masks(layers, orders, args.damaged).items():
                    weight_view(layers[n]).mul_(keep)
        if args.flood:  # the worst case the heads' caps allow: every position a confident detection
            with torch.no_grad():
                for conv in _score_convs(model):
                    conv.bias += 10.0
        val = ctx.dataset("val")
        metric = build_metric(ctx.mmdet3d_cfg, ctx.data_root, ctx.conf.dataset.format, "val", ctx.conf.dataset.classes)
        counts = []
        metric_process = metric.process
        metric.process = lambda batch, outs: (counts.extend(len(o["pred_instances_3d"]["scores_3d"]) for o in outs),
                                              metric_process(batch, outs))
        frames = list(range(args.frames))
        _, capped = evaluate_detector(model, val, frames, metric, max_detections=ctx.conf.eval.max_detections)
        extra.update(detections_per_frame=float(np.mean(counts)), max_detections_seen=int(max(counts)),
                     capped_frames=capped, seconds_per_frame=(time.perf_counter() - start) / len(frames))
    elif args.phase == "dp":
        rng = np.random.default_rng(0)
        curves = [np.concatenate([[0.0], np.cumsum(np.sort(rng.random(args.levels)))]) for _ in layers]  # convex
        costs = [np.linspace(1.0, 0.0, args.levels + 1) * (10 ** rng.uniform(6, 8)) for _ in layers]
        budget = 0.25 * sum(c[0] for c in costs)
        start = time.perf_counter()
        dp_allocate(curves, costs, budget, units=10_000)
    else:
        raise SystemExit(f"unknown phase {args.phase!r}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _rss_mb(), "setup_mb": setup_rss, "layers": len(layers),
            "weights": int(sum(m.weight.numel() for m in layers.values())), **extra}


def _score_convs(model) -> list:
    """The final class-score convolutions of a CenterHead (per task) or an Anchor3DHead."""
    head = getattr(model, "pts_bbox_head", None) or model.bbox_head
    if hasattr(head, "task_heads"):
        return [task.heatmap[-1] for task in head.task_heads]
    return [head.conv_cls]


def _masks(layers, orders, sparsity: float) -> dict:
    """Every layer's canonical-view mask (True = kept) without its first ``sparsity`` of the order."""
    from dm3d_exp.adapters.layers import weight_view
    from dm3d_exp.core.ranking import mask_from_order

    return {n: mask_from_order(o, tuple(weight_view(layers[n]).shape), int(sparsity * o.numel()))
            for n, o in orders.items()}


def measure(**kw) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(kw)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {kw} failed:\n{proc.stderr[-3000:]}")
    row = {**kw, **json.loads(proc.stdout.strip().splitlines()[-1])}
    row["grown_mb"] = max(row["peak_mb"] - row["setup_mb"], 0.0)
    print(f"  {kw}: {row['seconds']:.2f} s, +{row['grown_mb']:.0f} MB", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--measured-k", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="ratios only, no growth sweep")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kw = json.loads(args.child)
        print(json.dumps(child(argparse.Namespace(**{"thin": 1, "probes": 1, "levels": 1000, "damaged": 0.0, "flood": False, **kw}))))
        return 0

    n = args.frames
    out: dict = {"machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                             "processor": platform.processor(), "python": platform.python_version(),
                             "torch_threads": 1},
                 "frames": n, "ratios": {}, "rows": []}
    for det in DETECTORS:
        print(det, flush=True)
        m = lambda **kw: measure(detector=det, **kw)  # noqa: E731
        ref = m(phase="fwdbwd", frames=n)
        f1, f4 = m(phase="fisher", frames=n), m(phase="fisher", frames=n, probes=4)
        ref4 = m(phase="fwdbwd", frames=n, probes=4)
        aware, recon, stat = m(phase="aware", frames=n), m(phase="recon", frames=n), m(phase="statcorr", frames=n)
        k = args.measured_k
        fk, meas = m(phase="fisher", frames=2, levels=k), m(phase="measured", frames=2, levels=k)
        dp = m(phase="dp", frames=1)
        ev, ev_bad = m(phase="eval", frames=40), m(phase="eval", frames=40, damaged=0.5)
        ev_flood = m(phase="eval", frames=40, flood=True)
        out["rows"] += [ref, f1, f4, ref4, aware, recon, stat, fk, meas, dp, ev, ev_bad, ev_flood]
        mem = lambda r: r["grown_mb"] / max(ref["grown_mb"], 1.0)  # noqa: E731
        out["ratios"][det] = {
            "fisher_R1_over_fwdbwd": f1["seconds"] / ref["seconds"],
            "fisher_R4_over_fwdbwd": f4["seconds"] / ref["seconds"],
            "fisher_R4_over_R1": f4["seconds"] / f1["seconds"],
            "fisher_R4_over_fwdbwd_R4": f4["seconds"] / ref4["seconds"],
            "aware_curves_over_fwdbwd": aware["seconds"] / ref["seconds"],
            "reconstruction_over_fisher": recon["seconds"] / f1["seconds"],
            "reconstruction_over_aware_sensitivity": recon["seconds"] / aware["seconds"],
            "statcorr_over_fisher": stat["seconds"] / f1["seconds"],
            f"measured_over_fisher_N2_K{k}": meas["seconds"] / fk["seconds"],
            "dp_seconds": dp["seconds"],
            "eval_damaged_over_dense": ev_bad["seconds_per_frame"] / ev["seconds_per_frame"],
            "eval_flooded_over_dense": ev_flood["seconds_per_frame"] / ev["seconds_per_frame"],
            "detections_per_frame_flooded": ev_flood["detections_per_frame"],
            "eval_dense_s_per_frame": ev["seconds_per_frame"], "eval_damaged_s_per_frame": ev_bad["seconds_per_frame"],
            "detections_per_frame_dense": ev["detections_per_frame"],
            "detections_per_frame_damaged": ev_bad["detections_per_frame"],
            "peak_memory_fisher_over_fwdbwd": mem(f1), "peak_memory_aware_over_fwdbwd": mem(aware),
            "peak_memory_reconstruction_over_fwdbwd": mem(recon),
            "layers": ref["layers"], "weights": ref["weights"],
        }
    if not args.quick:
        print("growth", flush=True)
        growth = []
        for det in (*DETECTORS, WIDE):
            growth.append(measure(detector=det, phase="fisher", frames=8, growth="model"))
        for frames in (4, 8, 16):
            growth.append(measure(detector=DETECTORS[1], phase="fisher", frames=frames, growth="frames"))
        for levels in (100, 4000):
            growth.append(measure(detector=DETECTORS[1], phase="fisher", frames=8, levels=levels, growth="levels"))
        for thin in (4, 2):
            growth.append(measure(detector=DETECTORS[1], phase="fisher", frames=8, thin=thin, growth="points"))
        out["growth"] = growth
        _plot(growth, RESULTS / "stage_costs.png")
    RESULTS.mkdir(exist_ok=True)
    tmp = RESULTS / "stage_costs.json.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, RESULTS / "stage_costs.json")
    for det, r in out["ratios"].items():
        print(det, {k: round(v, 3) for k, v in r.items()})
    return 0


def _plot(growth, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cp = DETECTORS[1]
    base = next(r for r in growth if r["growth"] == "model" and r["detector"] == cp)
    series = {
        "frames N": [(r["frames"], r["seconds"]) for r in growth if r["detector"] == cp and r["growth"] == "frames"],
        "levels K": [(r.get("levels", 1000), r["seconds"]) for r in growth if r["growth"] == "levels" or r is base],
        "points per frame (fraction)": [(1.0 / r.get("thin", 1), r["seconds"]) for r in growth
                                        if r["growth"] == "points" or r is base],
        "prunable weights (PP, CP, 2x CP)": [(r["weights"], r["seconds"]) for r in growth if r["growth"] == "model"],
    }
    lo, hi = min(r["seconds"] for r in growth) / 2, max(r["seconds"] for r in growth) * 2  # one scale: flat is flat
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (label, pts) in zip(axes, series.items()):
        pts = sorted(pts)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.loglog(xs, ys, "o-")
        ax.set_ylim(lo, hi)
        ax.set_xlabel(label)
        ax.set_ylabel("Fisher curves, s (1 thread)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Sensitivity (Fisher, R = 1) cost growth; CenterPoint unless named")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
