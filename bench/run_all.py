"""Run every bench/bench_*.py (each writes bench/results/<name>.json) and collect the ratio lines.

Usage: python bench/run_all.py [NAME ...]   (names without the bench_ prefix; default: all)
Results: bench/results/summary.json — per benchmark its exit status, wall time and result files
(<name>.json or <name>_<variant>.json).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = {f"bench_{n}.py" for n in argv}
        unknown = wanted - {s.name for s in scripts}
        if unknown:
            print(f"error: unknown benchmark(s) {sorted(unknown)}, expected {[s.stem[6:] for s in scripts]}",
                  file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.name in wanted]
    summary = {}
    for script in scripts:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        name = script.stem[6:]
        files = sorted(RESULTS.glob(f"{name}.json")) + sorted(RESULTS.glob(f"{name}_*.json"))
        summary[name] = {"exit": proc.returncode, "seconds": round(time.perf_counter() - start, 2),
                         "results": {f.stem: json.loads(f.read_text()) for f in files}}
        print(f"{script.stem}: exit {proc.returncode}, {summary[script.stem[6:]]['seconds']} s")
    RESULTS.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, RESULTS / "summary.json")
    return max((v["exit"] for v in summary.values()), default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
