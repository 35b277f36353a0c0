"""Benchmark: time to generate the synthetic KITTI-like dataset (target: 1,000 frames in < 180 s on 2 cores).

Usage: python bench/bench_synth.py [--frames 1000] [--workers 2] [--compare-real ../shared/data/kitti_real_frames]
Writes bench/results/synth.json (temp file, then rename). The realism comparison, when asked for, runs on
the generated frames after the timing and is not part of it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dm3d_exp.data import SynthParams, generate_dataset, realism_report
from dm3d_exp.kitti.format import atomic_write_bytes

TARGET_S = 180.0
TARGET_FRAMES = 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=TARGET_FRAMES)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--compare-real", type=Path, help="also write the realism report of the generated frames")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "synth.json")
    args = ap.parse_args(argv)
    params = SynthParams(num_train=max(1, args.frames * 4 // 5), num_val=args.frames - max(1, args.frames * 4 // 5))
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth-"))
    try:
        t0 = time.perf_counter()
        manifest = generate_dataset(params, tmp / "ds", workers=args.workers)
        seconds = time.perf_counter() - t0
        est_1000 = seconds * TARGET_FRAMES / params.num_frames
        result = {
            "frames": params.num_frames, "workers": args.workers, "cpus": os.cpu_count(),
            "seconds": round(seconds, 2), "seconds_per_frame": round(seconds / params.num_frames, 4),
            "estimated_seconds_per_1000_frames": round(est_1000, 1), "target_seconds_per_1000_frames": TARGET_S,
            "ratio_to_target": round(est_1000 / TARGET_S, 3),
            "points_per_frame": round(manifest["counts"]["points"] / params.num_frames),
            "points_reduced_per_frame": round(manifest["counts"]["points_reduced"] / params.num_frames),
            "params": params.to_dict(), "python": platform.python_version(), "machine": platform.machine(),
        }
        if args.compare_real is not None:
            rep = realism_report(tmp / "ds", args.compare_real)
            result["realism"] = {k: rep[k] for k in ("range_bin_edges_m", "range_ratio", "object_bin_edges_m",
                                                     "object_ratio", "within_bound")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
