"""Benchmark of the KITTI evaluator on the 3769-frame KITTI val Car case (../shared/data/kitti_eval_reference).

Target: the whole ``evaluate_dirs`` call (reading 2 x 3769 label files + all 2D/BEV/3D/AOS APs) under 60 s on
2 cores. Writes bench/results/kitti_eval.json (temp file, then atomic rename) with the best-of-repeats wall
time, its ratio to the target, the load/evaluate split and the largest |AP - official| over all keys.
Exits 0 with a note (and writes nothing) where the reference data is absent.

    python bench/bench_kitti_eval.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dm3d_exp.kitti.eval import evaluate, evaluate_dirs
from dm3d_exp.kitti.format import atomic_write_bytes, read_label_file

TARGET_S = 60.0
ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / ".." / "shared" / "data" / "kitti_eval_reference" / "kitti_val_car"
RESULT = ROOT / "bench" / "results" / "kitti_eval.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not (CASE / "official_ap.json").is_file():
        print(f"reference case not found at {CASE}; nothing measured")
        return
    official = json.loads((CASE / "official_ap.json").read_text())
    gt_dir, det_dir = CASE / "gt_label_2", CASE / "det_data"

    best_total, results = float("inf"), None
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = evaluate_dirs(gt_dir, det_dir)
        best_total = min(best_total, time.perf_counter() - start)

    # split: file reading vs evaluation
    ids = sorted(p.stem for p in gt_dir.glob("*.txt"))
    start = time.perf_counter()
    gt = [read_label_file(gt_dir / f"{i}.txt", with_score=False) for i in ids]
    dt = [read_label_file(det_dir / f"{i}.txt", with_score=True) for i in ids]
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(gt, dt)
    eval_s = time.perf_counter() - start

    max_diff = max(abs(results[k] - v) for k, v in official.items())
    report = {
        "benchmark": "kitti_eval",
        "case": "kitti_val_car",
        "frames": len(ids),
        "gt_objects": int(sum(len(g) for g in gt)),
        "detections": int(sum(len(d) for d in dt)),
        "target_s": TARGET_S,
        "repeats": args.repeats,
        "total_s": best_total,
        "ratio_to_target": best_total / TARGET_S,
        "load_s": load_s,
        "evaluate_s": eval_s,
        "keys": len(results),
        "max_abs_diff_vs_official_ap": max_diff,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(f"kitti_val_car ({len(ids)} frames): {best_total:.2f} s ({best_total / TARGET_S:.3f} x target; "
          f"load {load_s:.2f} s, evaluate {eval_s:.2f} s), max |AP - official| = {max_diff:.5f}")
    atomic_write_bytes(RESULT, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
