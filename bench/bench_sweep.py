"""Sweep amortisation (issue 13): does the stage cache make a methods x targets sweep cost little more than
its unavoidable work?

Runs one real `dm3d` multirun (default: 3 methods x 2 FLOPs targets on the shipped PointPillars,
+experiment=quick, threads=1, sqlite tracking) in a fresh cache and reads every job's stage times:
- lower bound = one sensitivity + one calibration + every job's allocate, prune, recover and evaluation
  (the work no cache can share) — goal: sweep wall time <= 1.2 x lower bound;
- no-cache cost = the first job's wall time (cold cache: calibration, sensitivity, dense evaluation) x jobs;
- cache hits per stage.
Results: bench/results/sweep.json (with the machine).

    python bench/bench_sweep.py [--methods dm3d,lamp,uniform] [--targets 0.5,0.25] [-- extra overrides]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOAL = 1.2
SHARED = ("calibrate", "sensitivity")  # computed once per sweep (also the dense evaluation: first job)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="dm3d,lamp,uniform")
    ap.add_argument("--targets", default="0.5,0.25")
    ap.add_argument("--detector", default="pointpillars_synth")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dm3d-sweep-bench-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-c", "from dm3d_exp.cli import main; main()", "--multirun",
               f"pruning={args.methods}", f"pruning.flops_target={args.targets}", f"detector={args.detector}",
               "+experiment=quick", "threads=1", "progress=false", f"cache_dir={tmp / 'cache'}",
               f"tracking.db_path={tmp / 'mlflow.db'}", f"hydra.sweep.dir={tmp / 'sweep'}", *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        jobs = [json.loads(p.read_text()) for p in sorted((tmp / "sweep").rglob("summary.json"),
                                                          key=lambda p: int(p.parent.name.split("_")[0]))]
    times = [{k[5:-2]: v for k, v in s.items() if k.startswith("time/")} for s in jobs]
    hits = {}
    for s in jobs:
        for k, v in s.items():
            if k.startswith("cache/") and k.endswith("_hit"):
                hits.setdefault(k[6:-4], []).append(int(v))
    shared = sum(max(t.get(stage, 0.0) for t in times) for stage in SHARED)
    per_job = sum(sum(v for k, v in t.items() if k not in SHARED) for t in times)
    first_job = sum(times[0].values())
    lower = shared + per_job
    out = {"machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
           "command": " ".join(cmd[3:]), "jobs": len(jobs), "wall_s": wall, "lower_bound_s": lower,
           "ratio_wall_over_lower_bound": wall / lower, "goal": GOAL,
           "no_cache_estimate_s": first_job * len(jobs), "ratio_wall_over_no_cache": wall / (first_job * len(jobs)),
           "stage_seconds_per_job": times, "cache_hits": {k: sum(v) for k, v in hits.items()},
           "note": "wall includes each job's process start, imports and MLflow logging; the lower bound does not"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep.json.tmp").write_text(json.dumps(out, indent=1))
    os.replace(RESULTS / "sweep.json.tmp", RESULTS / "sweep.json")
    print(f"{len(jobs)} jobs: wall {wall:.0f} s, lower bound {lower:.0f} s (ratio {wall / lower:.2f}, goal <= {GOAL}); "
          f"without the cache ~{first_job * len(jobs):.0f} s; cache hits {out['cache_hits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
