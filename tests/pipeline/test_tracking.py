"""pipeline.tracking against sqlite and a real `mlflow server`."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import OmegaConf

from dm3d_exp.errors import InputError
from dm3d_exp.pipeline.tracking import (PARENT_TAG, ROLE_TAG, TRUNCATED_TAG, JobTracker, Terminated, check_server,
                                        close_dead_runs, ensure_store, flatten, owner_alive, sqlite_path,
                                        start_run, terminate_on_sigterm, tracking_uri)


def test_tracking_uri_backends(tmp_path):
    assert tracking_uri({"backend": "sqlite", "db_path": None}, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri({"backend": "sqlite", "db_path": "a/x.db"}, tmp_path) == f"sqlite:///{tmp_path}/a/x.db"
    assert tracking_uri({"backend": "sqlite", "db_path": "/abs/y.db"}, tmp_path) == "sqlite:////abs/y.db"
    assert sqlite_path(tracking_uri({"backend": "sqlite"}, tmp_path)) == tmp_path / "mlflow.db"
    assert tracking_uri({"backend": "server", "uri": "http://h:5000/"}, tmp_path) == "http://h:5000"
    assert tracking_uri({"backend": "off"}, tmp_path) is None
    assert tracking_uri({"backend": False}, tmp_path) is None  # YAML 1.1 `off`
    with pytest.raises(InputError, match="tracking.uri"):
        tracking_uri({"backend": "server", "uri": None}, tmp_path)
    with pytest.raises(InputError, match="tracking.backend='mlruns'"):
        tracking_uri({"backend": "mlruns"}, tmp_path)


def test_flatten_nested_dictconfig():
    cfg = OmegaConf.create({"a": {"b": 1, "c": [1, 2], "d": None, "e": {}}, "name": "x", "ref": "${a.b}"})
    assert flatten(cfg) == {"a.b": 1, "a.c": [1, 2], "a.d": None, "a.e": {}, "name": "x", "ref": 1}
    assert flatten({"a": {"b": 2}}, sep="/") == {"a/b": 2}


def test_tracker_off_is_noop(tmp_path):
    with JobTracker(None, "exp", "run") as jt:
        jt.log_params({"a": 1})
        jt.log_metrics({"eval/mAP": 0.5})
        jt.log_artifact(tmp_path)
        jt.set_tags({"t": 1})
    assert jt.run_id is None and not jt.enabled


def test_children_under_parent(store_uri, make_sweep):
    parent, jobs = make_sweep(store_uri, "synthetic_kitti/children")
    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name("synthetic_kitti/children")
    children = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    assert {r.info.run_id for r in children} == {j["run_id"] for j in jobs}
    assert client.get_run(parent).data.tags[ROLE_TAG] == "sweep"
    by_id = {r.info.run_id: r for r in children}
    for job in jobs:
        run = by_id[job["run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags[ROLE_TAG] == "job"
        assert run.data.params["pruning.method"] == job["method"]
        assert run.data.params["pruning.flops_target"] == str(job["target"])  # params are strings
        assert run.data.params["detector.checkpoint"] == "null"
        assert run.data.params["dataset.classes"] == '["Car", "Pedestrian", "Cyclist"]'
        assert run.data.metrics == {k: float(v) for k, v in job["metrics"].items()}
        assert [a.path for a in client.list_artifacts(job["run_id"])] == ["allocation.json"]
    # sweep axes are metrics too, so they can be filtered numerically
    low = client.search_runs([exp.experiment_id], "metrics.`cost/flops_target` < 0.4")
    assert [r.data.params["pruning.flops_target"] for r in low] == ["0.25"]


def test_many_long_and_odd_params(sqlite_uri):
    flat = {f"p{i:03d}": i for i in range(250)}  # 3 batches of MLflow's 100
    flat["long"] = "x" * (MAX_PARAM_VAL_LENGTH + 10)
    flat["odd[key]=v"] = 1
    with JobTracker(sqlite_uri, "params", "run") as jt:
        jt.log_params(flat)
    run = MlflowClient(sqlite_uri).get_run(jt.run_id)
    assert len(run.data.params) == 252
    assert run.data.params["p249"] == "249"
    assert len(run.data.params["long"]) == MAX_PARAM_VAL_LENGTH
    assert run.data.params["long"].endswith("[truncated]")
    assert run.data.tags[TRUNCATED_TAG] == "long"
    assert run.data.params["odd_key__v"] == "1"


def test_failed_job_is_marked_failed(sqlite_uri):
    with pytest.raises(RuntimeError, match="boom"):
        with JobTracker(sqlite_uri, "fail", "run", tags={"k": "v"}) as jt:
            raise RuntimeError("boom")
    run = MlflowClient(sqlite_uri).get_run(jt.run_id)
    assert run.info.status == "FAILED" and run.data.tags["k"] == "v"
    assert PARENT_TAG not in run.data.tags


def test_failed_run_records_its_error_and_sigterm_ends_it_killed(sqlite_uri):
    import os
    import signal

    with pytest.raises(ValueError):
        with JobTracker(sqlite_uri, "fail", "bad") as jt:
            raise ValueError("calib.num_frames=50 is larger than the split\nsecond line")
    tags = MlflowClient(sqlite_uri).get_run(jt.run_id).data.tags
    assert tags["dm3d.error"] == "ValueError: calib.num_frames=50 is larger than the split"
    with pytest.raises(Terminated):
        with terminate_on_sigterm(), JobTracker(sqlite_uri, "fail", "term") as jt:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM did not interrupt")  # pragma: no cover
    assert MlflowClient(sqlite_uri).get_run(jt.run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the previous handler is back


def test_close_dead_runs_ends_only_runs_of_dead_local_processes(sqlite_uri):
    """A RUNNING run whose owner (host, pid, start time) is gone -> KILLED with a reason; a live owner, a run
    of another host and a run without owner tags stay RUNNING; finished runs are untouched."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = MlflowClient(sqlite_uri)
    ids = {}
    for name, owner in {"dead": {"dm3d.pid": str(dead.pid)}, "alive": {},
                        "reused_pid": {"dm3d.proc_start": "1"},  # our pid, but another process's start time
                        "other_host": {"dm3d.host": "elsewhere.example", "dm3d.pid": str(dead.pid)}}.items():
        ids[name] = start_run(sqlite_uri, "repair", name, {ROLE_TAG: "job", **owner})
    ids["untagged"] = start_run(sqlite_uri, "repair", "untagged", {ROLE_TAG: "job", "dm3d.pid": "x"})
    with JobTracker(sqlite_uri, "repair", "finished") as jt:
        pass
    assert owner_alive(client.get_run(ids["alive"]).data.tags) is True
    assert sorted(close_dead_runs(sqlite_uri, "repair")) == sorted([ids["dead"], ids["reused_pid"]])
    status = {n: client.get_run(i).info.status for n, i in ids.items()}
    assert status == {"dead": "KILLED", "reused_pid": "KILLED", "alive": "RUNNING", "other_host": "RUNNING",
                      "untagged": "RUNNING"}
    assert "is gone" in client.get_run(ids["dead"]).data.tags["dm3d.closed_by"]
    assert client.get_run(jt.run_id).info.status == "FINISHED"
    assert close_dead_runs(sqlite_uri) == []  # idempotent, over every experiment


def test_unusable_sqlite_store_is_one_line_input_error(tmp_path):
    bad = tmp_path / "not_a_db"
    bad.mkdir()
    (bad / "mlflow.db").write_text("this is not sqlite")
    with pytest.raises(InputError, match=r"MLflow store sqlite:///.* is not usable") as e:
        ensure_store(f"sqlite:///{bad / 'mlflow.db'}")
    assert "\n" not in str(e.value)


def _parallel_job(uri: str, i: int) -> None:
    ensure_store(uri)
    with JobTracker(uri, "parallel", f"job{i}") as jt:
        jt.log_metrics({"i": i})


def test_ensure_store_fresh_db_parallel(tmp_path):
    """Parallel first-time use of a fresh sqlite file: one migration under the lock, no failures."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_parallel_job, args=(uri, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    ensure_store(uri)  # idempotent
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parallel")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.metrics["i"] for r in runs) == [0, 1, 2]
    assert Path(exp.artifact_location).parent == tmp_path / "new" / "mlruns"


def test_unreachable_server_is_input_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="not healthy"):
        check_server(f"http://127.0.0.1:{port}", timeout=2)
