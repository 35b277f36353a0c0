"""Look at the MLflow dashboard the way a user does: headless Chromium screenshots of the experiment page,
a job run and the sweep's parent run.

Usage: python bench/mlflow_screenshots.py [--tracking-uri sqlite:///path/mlflow.db] [--experiment NAME]
                                          [--out bench/results/mlflow_ui]
Without --tracking-uri it first runs a small real sweep (dm3d,uniform x 0.5,0.25 on the tiny end-to-end
workspace of tests/pipeline/tiny_workspace.py, about 2 minutes on 2 cores) into a fresh store.
Needs Chromium (Debian: `apt-get install chromium`; or set CHROMIUM=/path/to/chrome). Starts
`mlflow server` on a free 127.0.0.1 port, writes experiment.png, job_run.png, job_metrics.png (the run's
Model metrics tab: the headline section first), compare_jobs.png (the sweep's jobs side by side) and
parent_run.png (the sweep's pareto.png) under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000"]
TALL = {"job_metrics.png": 5000, "compare_jobs.png": 2400}  # pages whose point is below the first screen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_sweep(root: Path) -> tuple[str, str]:
    """A real 2 x 2 sweep on the tiny workspace into a fresh sqlite store: (uri, experiment)."""
    sys.path.insert(0, str(REPO / "tests" / "pipeline"))
    from tiny_workspace import make_workspace, run_dm3d

    ws = make_workspace(root / "ws")
    db = root / "mlflow.db"
    run_dm3d(ws, root, "--multirun", "pruning=dm3d,uniform", "pruning.flops_target=0.5,0.25",
             "study=demo/tiny_pointpillars", f"tracking.db_path={db}", f"hydra.sweep.dir={root / 'sweep'}")
    return f"sqlite:///{db}", "demo/tiny_pointpillars"


def screenshot(chromium: str, url: str, out: Path, profile: Path, height: int = 1000) -> None:
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--window-size=1600,{height}", f"--user-data-dir={profile}",
                    f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri")
    p.add_argument("--experiment")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mlflow_ui")
    args = p.parse_args(argv)
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("error: no Chromium found: install it (apt-get install chromium) or set CHROMIUM", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="dm3d-ui-") as d:
        root = Path(d)
        uri, experiment = (args.tracking_uri, args.experiment) if args.tracking_uri else demo_sweep(root)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment) if experiment else client.search_experiments()[0]
        runs = client.search_runs([exp.experiment_id])
        parent = next(r for r in runs if r.data.tags.get("dm3d.role") == "sweep")
        jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        job, children = jobs[0], [r.info.run_id for r in jobs]
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            args.out.mkdir(parents=True, exist_ok=True)
            ml = "?workflowType=machine_learning"  # MLflow 3's UI mode; its default is the GenAI view
            pages = {"experiment.png": f"{base}/#/experiments/{exp.experiment_id}/runs{ml}",
                     "job_run.png": f"{base}/#/experiments/{exp.experiment_id}/runs/{job.info.run_id}{ml}",
                     "job_metrics.png": f"{base}/#/experiments/{exp.experiment_id}/runs/{job.info.run_id}/model-metrics{ml}",
                     "compare_jobs.png": f"{base}/#/compare-runs?runs={json.dumps(children)}"
                                         f"&experiments={json.dumps([exp.experiment_id])}&workflowType=machine_learning",
                     "parent_run.png": f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/report/pareto.png{ml}"}
            for name, url in pages.items():
                screenshot(chromium, url, args.out / name, root / "profile", TALL.get(name, 1000))
                print(f"{args.out / name}: {url}")
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
