"""Issue 11.5, end to end: a job's MLflow run lives as long as the job (created first, each stage's time
logged as it finishes), ends KILLED on SIGTERM (exit 143, one line, no traceback), and runs that kill -9
left RUNNING are closed by `dm3d-report --repair` and by the next sweep; a dead tracking server stops the job
before any work, with one line and exit 2."""
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from mlflow.tracking import MlflowClient
from dm3d_exp.pipeline.tracking import ensure_store
from tiny_workspace import ENV, dm3d_command, make_workspace, run_dm3d

pytestmark = pytest.mark.slow
SLOW_STAGE = ("pruning=dm3d", "sensitivity=measured", "sensitivity.measured_levels=40")  # minutes on the tiny model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("lifecycle"))


def _start(workspace, cwd, db, *overrides) -> subprocess.Popen:
    """Popen of `dm3d` logging to ``db``, created first (under the jobs' own migration lock) so that the
    test's polling never races the job's first-time migration of the file."""
    ensure_store(f"sqlite:///{db}")
    return subprocess.Popen(dm3d_command(workspace, *overrides), cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _job_runs(db, study, status=None):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("dm3d.role") == "job" and (status is None or r.info.status == status)]


def _wait_for_live_run(proc, db, study, timeout=240):
    """The job's RUNNING run once it shows a finished stage (calibrate) and no result yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        runs = [r for r in _job_runs(db, study, "RUNNING") if "time/calibrate_s" in r.data.metrics]
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError("no live run appeared")


def test_sigterm_mid_stage_ends_the_run_killed_with_its_stage_metrics(workspace, tmp_path):
    db = tmp_path / "mlflow.db"
    proc = _start(workspace, tmp_path, db, *SLOW_STAGE, "study=life/term", f"tracking.db_path={db}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    live = _wait_for_live_run(proc, db, "life/term")
    assert "pruned/eval/mAP" not in live.data.metrics and live.data.params["pruning.method"] == "dm3d"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "dm3d: terminated"
    run = MlflowClient(f"sqlite:///{db}").get_run(live.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["dm3d.error"].startswith("Terminated")
    cache = workspace[0] / "cache"
    assert not [p for p in cache.rglob(".*") if p.is_dir()], "temp dirs left in the cache"
    assert not (tmp_path / "run" / "summary.json").exists()


def test_kill_9_leftovers_are_closed_by_repair_and_by_the_next_sweep(workspace, tmp_path):
    db = tmp_path / "mlflow.db"
    sweeps = {study: _start(workspace, tmp_path, db, "--multirun", *SLOW_STAGE, "pruning.flops_target=0.5,0.25",
                            f"study={study}", f"tracking.db_path={db}", f"hydra.sweep.dir={tmp_path / study}")
              for study in ("life/a", "life/b")}
    for study, proc in sweeps.items():
        _wait_for_live_run(proc, db, study)
    for proc in sweeps.values():
        proc.kill()
        proc.wait(60)
    client = MlflowClient(f"sqlite:///{db}")

    def running(study):
        exp = client.get_experiment_by_name(study)
        return {r.data.tags["dm3d.role"] for r in client.search_runs([exp.experiment_id])
                if r.info.status == "RUNNING"}

    assert running("life/a") == running("life/b") == {"job", "sweep"}  # what kill -9 leaves behind
    rep = subprocess.run([sys.executable, "-c", "from dm3d_exp.cli import report_main; report_main()",
                          "--tracking-uri", str(db), "--repair", "--experiment", "life/a"],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert rep.returncode == 0 and rep.stdout.startswith("closed 2 run(s)"), rep.stderr[-2000:]
    assert running("life/a") == set() and running("life/b") == {"job", "sweep"}
    run_dm3d(workspace, tmp_path, "--multirun", "pruning=uniform", "pruning.flops_target=0.5", "study=life/b",
             f"tracking.db_path={db}", f"hydra.sweep.dir={tmp_path / 'next'}")
    exp = client.get_experiment_by_name("life/b")
    runs = client.search_runs([exp.experiment_id])
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 2 and all("is gone" in r.data.tags["dm3d.closed_by"] for r in killed)
    assert sum(r.info.status == "FINISHED" for r in runs) == 2  # the next sweep's parent and job


def test_dead_tracking_server_stops_the_job_before_any_work(workspace, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "fresh_cache"
    start = time.monotonic()
    proc = subprocess.run([*dm3d_command(workspace, "tracking=server", f"tracking.uri=http://127.0.0.1:{port}"),
                           f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "not healthy" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not cache.exists() or not any(cache.rglob("meta.json"))  # no stage ran
    assert time.monotonic() - start < 120
