"""GPU path (issue 13): time DM3D's pipeline on a real-size detector with generated inputs, one command.

    bash bench/gpu_stack.sh && python bench/gpu_pipeline.py            # on a machine with one CUDA GPU
    python bench/gpu_pipeline.py --device cpu --frames 2 --points 20000 --detectors centerpoint_voxel_nus  # CPU dry run

For each detector (mmdet3d model-zoo configs, He-normal random weights: the timing does not depend on
training) and N generated LiDAR sweeps (points uniform over the config's range, nuScenes-size 300k x 5 or
KITTI-size 120k x 4): the pipeline's steps in order, each timed (CUDA-synchronised) with its peak GPU memory:
  fwdbwd     N x one forward + backward of the probe scalar (the Fisher stage's floor; the reference)
  calibrate  per-layer rulebook pair counts on 8 reference sweeps (the MACs model)
  sensitivity  Fisher curves, R = 1 probe per sweep, K = 1000 levels
  allocate   the exact DP at flops_target 0.25 (10,000 units)
  reconstruct  sequential fixed-mask reconstruction of every pruned layer on 8 sweeps
Each ratio is the step's time over fwdbwd. Results: bench/results/gpu_pipeline_<device>.json, with the
versions of torch, CUDA, mmcv and spconv. Each detector's run is meant to stay under 5 minutes of GPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DETECTORS = {  # name -> (zoo config, points per sweep, point features)
    "centerpoint_voxel_nus": ("mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py",
                              300_000, 5),
    "pv_rcnn_kitti": ("mmdet3d::pv_rcnn/pv_rcnn_8xb2-80e_kitti-3d-3class.py", 120_000, 4),
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Step:
    """Time (synchronised) and peak GPU memory of one step."""

    def __init__(self, name: str, device: str, rows: dict):
        self.name, self.device, self.rows = name, device, rows

    def __enter__(self):
        _sync(self.device)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            _sync(self.device)
            peak = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
            self.rows[self.name] = {"seconds": time.perf_counter() - self.start, "peak_gpu_mb": peak}
            print(f"  {self.name}: {self.rows[self.name]['seconds']:.2f} s"
                  + (f", peak {peak:.0f} MiB" if peak is not None else ""), flush=True)


def sweeps(cfg, n: int, points: int, features: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` generated sweeps: points uniform over the config's point-cloud range (z over its lower half)."""
    lo, hi = np.array(cfg.point_cloud_range[:3], dtype=np.float32), np.array(cfg.point_cloud_range[3:], dtype=np.float32)
    hi[2] = (lo[2] + hi[2]) / 2
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        xyz = rng.uniform(lo, hi, size=(points, 3)).astype(np.float32)
        rest = rng.uniform(0, 1, size=(points, features - 3)).astype(np.float32)
        out.append(np.concatenate([xyz, rest], axis=1))
    return out


def run_detector(name: str, device: str, frames: int, recon_frames: int, points: int | None = None) -> dict:
    from dm3d_exp.adapters.detector import build_detector, load_config, points_batch
    from dm3d_exp.adapters.heads import head_outputs
    from dm3d_exp.adapters.layers import he_normal_, layer_spec, prunable_modules, weight_view
    from dm3d_exp.adapters.macs_probe import PairRecorder
    from dm3d_exp.adapters.reconstruct import ReconstructionSpec, reconstruct_model
    from dm3d_exp.adapters.sensitivity import FisherSpec, _frame_gradients, fisher_curves, intra_layer_orders
    from dm3d_exp.core.allocate import dp_allocate
    from dm3d_exp.core.levels import level_counts
    from dm3d_exp.core.macs import LayerCost, level_costs
    from dm3d_exp.core.ranking import mask_from_order

    config, real_points, features = DETECTORS[name]
    points = points or real_points
    cfg = load_config(config)
    model = he_normal_(build_detector(cfg, None, device=device))
    layers = dict(prunable_modules(model))
    data = [points_batch(model, [s]) for s in sweeps(cfg, frames, points, features)]
    rows: dict = {}
    spec = FisherSpec(num_levels=1000, probes_per_frame=1)
    print(f"{name}: {len(layers)} prunable layers, {frames} sweeps of {points} points on {device}", flush=True)
    with Step("fwdbwd", device, rows):
        for _ in _frame_gradients(model, layers, data, spec, spec.probe, 1, torch.Generator().manual_seed(0)):
            pass
    with Step("calibrate", device, rows):
        with PairRecorder(model) as rec:
            for inputs, samples in data[:8]:
                with torch.no_grad():
                    head_outputs(model, inputs, samples)
                rec.add_frames(len(samples))
        pairs = rec.mean_pairs()
    costs = {n: LayerCost(n, pairs[n], layer_spec(m).cout, layer_spec(m).cin, layer_spec(m).kernel)
             for n, m in layers.items()}
    with Step("sensitivity", device, rows):
        orders = intra_layer_orders(model, layers, data, spec)
        curves = fisher_curves(model, layers, data, spec, orders)
    with Step("allocate", device, rows):
        level_cost = {n: level_costs(costs[n], orders[n], spec.num_levels) for n in layers}
        budget = 0.25 * sum(c.dense_macs for c in costs.values())
        plan = dp_allocate([curves[n] for n in layers], [level_cost[n] for n in layers], budget, units=10_000)
    masks = {n: mask_from_order(orders[n], tuple(weight_view(m).shape),
                                int(level_counts(spec.num_levels, costs[n].numel)[level]))
             for (n, m), level in zip(layers.items(), plan.levels)}
    with Step("reconstruct", device, rows):
        records = reconstruct_model(model, layers, masks, data[:recon_frames], ReconstructionSpec())
    ref = rows["fwdbwd"]["seconds"]
    return {"layers": len(layers), "weights": int(sum(m.weight.numel() for m in layers.values())),
            "frames": frames, "points_per_sweep": points, "recon_frames": recon_frames, "steps": rows,
            "ratios_over_fwdbwd": {k: v["seconds"] / ref for k, v in rows.items()},
            "pipeline_over_fwdbwd": sum(v["seconds"] for k, v in rows.items() if k != "fwdbwd") / ref,
            "reconstructed_layers": sum(r["status"].startswith("reconstructed") for r in records.values())}


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "cpu_count": os.cpu_count()}
    for mod in ("mmcv", "mmdet3d", "spconv"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - recorded, not raised: the result says what was missing
            out[mod] = f"unavailable: {e}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--recon-frames", type=int, default=8)
    ap.add_argument("--points", type=int, default=None, help="points per sweep (default: the detector's real size)")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    args = ap.parse_args(argv)
    unknown = [d for d in args.detectors.split(",") if d not in DETECTORS]
    if unknown:
        print(f"error: --detectors {unknown} unknown, expected some of {list(DETECTORS)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (run bench/gpu_stack.sh first)", file=sys.stderr)
        return 2
    out = {"versions": versions(), "device": args.device, "detectors": {}}
    for name in args.detectors.split(","):
        out["detectors"][name] = run_detector(name, args.device, args.frames, min(args.recon_frames, args.frames),
                                               args.points)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu_pipeline_{args.device}.json"
    path.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
    os.replace(path.with_suffix(".tmp"), path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
