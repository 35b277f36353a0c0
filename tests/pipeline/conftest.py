"""MLflow fixtures: a migrated sqlite template, a real `mlflow server`, and a synthetic sweep writer.

Migrating a fresh MLflow sqlite database takes ~5 s on 2 cores, so it happens once per session (the
template); tests that need their own store get a copy. Tests of first-time creation make a fresh one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dm3d_exp.pipeline.tracking import ROLE_TAG, JobTracker, ensure_store, flatten, start_run

SERVER_START_TIMEOUT_S = 90
STAGES = ("calibrate", "sensitivity", "allocate", "prune", "evaluate")
CLASSES = ("Car", "Pedestrian", "Cyclist")
# (method, FLOPs target, logs dense/eval/mAP): the uniform job omits it, so its dense reference must
# come from the dense-method run.
JOBS = (("dense", 1.0, True), ("dm3d", 0.5, True), ("dm3d", 0.25, True), ("uniform", 0.5, False))


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """A migrated, empty MLflow sqlite database (copy it, never write to it)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def sqlite_uri(tmp_path, migrated_db) -> str:
    """A private sqlite tracking URI (a copy of the migrated template)."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(migrated_db, db)
    return f"sqlite:///{db}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, migrated_db) -> str:
    """URI of a real `mlflow server` (1 worker, no job execution, sqlite backend in tmp), one per session."""
    root = tmp_path_factory.mktemp("server")
    shutil.copyfile(migrated_db, root / "mlflow.db")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S} s:\n"
                                f"{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(params=["sqlite", "server"])
def store_uri(request) -> str:
    """Each test using it runs against a private sqlite store and against the shared server."""
    return request.getfixturevalue("sqlite_uri" if request.param == "sqlite" else "mlflow_server")


def job_metrics(rng: np.random.Generator, method: str, target: float, dense_map: float, with_dense: bool) -> dict:
    """Plausible metrics of one job, drawn from ``rng`` (the shape of what the real jobs log)."""
    dense = method == "dense"
    ratio = 1.0 if dense else target * rng.uniform(0.97, 1.03)
    macs_dense = rng.uniform(2e9, 8e9)
    pruned_map = dense_map if dense else dense_map - rng.uniform(0.0, 0.15) * (1 - ratio)
    m = {"pruned/eval/mAP": pruned_map,
         "pruned/cost/flops_ratio": ratio, "pruned/cost/flops_reduction": 1.0 / ratio,
         "pruned/cost/macs_dense": macs_dense, "pruned/cost/macs_pruned": macs_dense * ratio,
         "pruned/cost/sparsity": 0.0 if dense else rng.uniform(0.3, 0.9), "cost/flops_target": target,
         "distortion/predicted": 0.0 if dense else rng.uniform(0.01, 1.0),
         "distortion/measured": 0.0 if dense else rng.uniform(0.01, 1.0)}
    half = rng.uniform(0.02, 0.08)  # frame-bootstrap 95 % intervals, as the evaluation logs them
    m["pruned/eval/mAP_ci_low"], m["pruned/eval/mAP_ci_high"] = pruned_map - half, pruned_map + half
    if not dense:
        lo = pruned_map - dense_map - rng.uniform(0.005, 0.05)
        m["pruned/eval/delta_mAP_ci_low"], m["pruned/eval/delta_mAP_ci_high"] = lo, lo + rng.uniform(0.01, 0.1)
    if with_dense:
        m["dense/eval/mAP"] = dense_map
    for c in CLASSES:
        m[f"pruned/eval/{c}/3d/moderate/R40"] = pruned_map * rng.uniform(0.8, 1.2)
    for s in STAGES:
        m[f"time/{s}_s"] = rng.uniform(0.1, 30.0)
        m[f"cache/{s}_hit"] = bool(rng.integers(0, 2))
    return m


@pytest.fixture
def make_sweep(tmp_path):
    """``make_sweep(uri, experiment, parent_run_id=None, seed=0)``: log the JOBS as children of a parent
    run (created with tag dm3d.role=sweep unless given); returns ``(parent_id, jobs)`` where each job is
    ``{"run_id", "method", "target", "params", "metrics"}`` exactly as logged."""
    artifact = tmp_path / "allocation.json"
    artifact.write_text('{"layers": {}}\n')

    def make(uri: str, experiment: str, parent_run_id: str | None = None, seed: int = 0):
        rng = np.random.default_rng(seed)
        if parent_run_id is None:
            parent_run_id = start_run(uri, experiment, "synthetic sweep", {ROLE_TAG: "sweep"})
        dense_map = rng.uniform(0.55, 0.8)
        jobs = []
        for method, target, with_dense in JOBS:
            cfg = {"pruning": {"method": method, "flops_target": target, "allocator": "dp"},
                   "dataset": {"name": "synthetic_kitti", "classes": list(CLASSES)},
                   "detector": {"name": "pointpillars_synth", "checkpoint": None}, "seed": seed}
            metrics = job_metrics(rng, method, target, dense_map, with_dense)
            with JobTracker(uri, experiment, f"pruning.method={method},pruning.flops_target={target}",
                            parent_run_id=parent_run_id) as jt:
                jt.log_params(flatten(cfg))
                jt.log_metrics(metrics)
                jt.log_artifact(artifact)
            jobs.append({"run_id": jt.run_id, "method": method, "target": target,
                         "params": flatten(cfg), "metrics": metrics})
        return parent_run_id, jobs

    return make


@pytest.fixture
def expected_summary():
    """``expected_summary(jobs) -> {(method, target): {column: value}}``, computed from what was logged."""
    def expect(jobs):
        dense_map = [j["metrics"]["pruned/eval/mAP"] for j in jobs if j["method"] == "dense"][0]
        out = {}
        for j in jobs:
            m = j["metrics"]
            ref = m.get("dense/eval/mAP", dense_map)
            out[(j["method"], j["target"])] = {
                "runs": 1, "map": m["pruned/eval/mAP"], "map_dense": ref, "delta_map": m["pruned/eval/mAP"] - ref,
                "flops_reduction": m["pruned/cost/flops_reduction"], "flops_ratio": m["pruned/cost/flops_ratio"],
                "time_s": sum(m[f"time/{s}_s"] for s in STAGES),
                "map_ci_low": m["pruned/eval/mAP_ci_low"], "map_ci_high": m["pruned/eval/mAP_ci_high"]}
            if j["method"] != "dense":
                out[(j["method"], j["target"])].update(delta_ci_low=m["pruned/eval/delta_mAP_ci_low"],
                                                       delta_ci_high=m["pruned/eval/delta_mAP_ci_high"])
        return out

    return expect


def assert_table_matches(table, expected) -> None:
    """Every (method, flops_target) row of a summary table equals the expected values."""
    assert len(table) == len(expected)
    for row in table.to_dict("records"):
        exp = expected[(row["method"], row["flops_target"])]
        for col, value in exp.items():
            assert row[col] == pytest.approx(value, rel=1e-12, abs=1e-12), (row["method"], row["flops_target"], col)


@pytest.fixture
def check_table():
    """The :func:`assert_table_matches` helper, as a fixture (test modules do not import conftest)."""
    return assert_table_matches


def assert_png(path) -> None:
    """``path`` is a non-empty PNG that decodes to an image with pixels."""
    import matplotlib.image

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    img = matplotlib.image.imread(str(path))
    assert img.shape[0] > 50 and img.shape[1] > 50


@pytest.fixture
def check_png():
    """The :func:`assert_png` helper, as a fixture."""
    return assert_png
