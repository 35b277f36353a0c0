"""MlflowSweepCallback: called directly on a composed config (Hydra swallows callback exceptions), and
once through a real Hydra multirun in a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from dm3d_exp.pipeline.callbacks import PARENT_ID_FILE, MlflowSweepCallback, parent_run_id_for_job
from dm3d_exp.pipeline.tracking import PARENT_TAG, ROLE_TAG, sqlite_path

CONFIG = """\
study: synthetic_kitti/callbacks
pruning: {method: dm3d, flops_target: 0.5}
tracking: {backend: sqlite, uri: null, db_path: mlflow.db}
hydra:
  callbacks:
    mlflow:
      _target_: dm3d_exp.pipeline.callbacks.MlflowSweepCallback
      backend: ${tracking.backend}
      uri: ${tracking.uri}
      db_path: ${tracking.db_path}
      experiment: ${study}
"""

APP = '''\
import hydra
from hydra.core.hydra_config import HydraConfig

from dm3d_exp.pipeline.callbacks import parent_run_id_for_job
from dm3d_exp.pipeline.tracking import JobTracker, flatten, tracking_uri


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    hc = HydraConfig.get()
    uri = tracking_uri(cfg.tracking, hc.runtime.cwd)
    dense = cfg.pruning.method == "dense"
    with JobTracker(uri, cfg.study, hc.job.override_dirname, parent_run_id_for_job(hc.sweep.dir)) as jt:
        jt.log_params(flatten(cfg))
        jt.log_metrics({"dense/eval/mAP": 0.7, "pruned/eval/mAP": 0.7 if dense else 0.6,
                        "pruned/cost/flops_reduction": 1.0 if dense else 1.0 / cfg.pruning.flops_target,
                        "pruned/cost/flops_ratio": 1.0 if dense else cfg.pruning.flops_target,
                        "cost/flops_target": cfg.pruning.flops_target, "time/prune_s": 2.0})


main()
'''


def _compose(conf_dir: Path, overrides: list[str]):
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "config.yaml").write_text(CONFIG)
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_parent_run_id_for_job_without_file(tmp_path):
    assert parent_run_id_for_job(tmp_path) is None
    assert parent_run_id_for_job(tmp_path / "missing") is None


def test_multirun_start_and_end(tmp_path, monkeypatch, make_sweep, expected_summary, check_table, check_png):
    monkeypatch.chdir(tmp_path)  # db_path is relative to the launch directory
    sweep_dir = tmp_path / "multirun" / "s1"
    cfg = _compose(tmp_path / "conf", [f"hydra.sweep.dir={sweep_dir}", "pruning.flops_target=0.25"])
    callback = instantiate(cfg.hydra.callbacks.mlflow)
    assert isinstance(callback, MlflowSweepCallback)
    db = tmp_path / "mlflow.db"
    assert not db.exists()

    callback.on_multirun_start(cfg)
    assert db.is_file()  # created and migrated by the launching process
    parent = parent_run_id_for_job(sweep_dir)
    assert parent and (sweep_dir / PARENT_ID_FILE).read_text() == parent + "\n"
    assert not list(sweep_dir.glob(".*.tmp"))
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags[ROLE_TAG] == "sweep"
    assert run.info.run_name == "sweep s1"  # nothing swept on this command line
    assert run.data.tags["dm3d.sweep_dir"] == str(sweep_dir)

    _, jobs = make_sweep(uri, "synthetic_kitti/callbacks", parent_run_id=parent, seed=3)
    callback.on_multirun_end(cfg)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["sweep/jobs"] == len(jobs)
    assert sorted(a.path for a in client.list_artifacts(parent, "report")) == [
        "report/pareto.png", "report/report.csv", "report/report.md"]
    png = client.download_artifacts(parent, "report/pareto.png", str(tmp_path / "dl"))
    check_png(png)
    check_table(pd.read_csv(sweep_dir / "report" / "report.csv"), expected_summary(jobs))


def test_multirun_end_without_children(sqlite_uri, tmp_path):
    sweep_dir = tmp_path / "sweep"
    cfg = _compose(tmp_path / "conf", [f"hydra.sweep.dir={sweep_dir}", f"tracking.db_path={sqlite_path(sqlite_uri)}"])
    callback = instantiate(cfg.hydra.callbacks.mlflow)
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)
    run = MlflowClient(sqlite_uri).get_run(parent_run_id_for_job(sweep_dir))
    assert run.info.status == "FINISHED" and "no job runs" in run.data.tags["dm3d.summary"]


def test_tracking_off_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _compose(tmp_path / "conf", [f"hydra.sweep.dir={tmp_path / 'sweep'}", "tracking.backend=off"])
    callback = instantiate(cfg.hydra.callbacks.mlflow)
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)
    assert not (tmp_path / "mlflow.db").exists() and parent_run_id_for_job(tmp_path / "sweep") is None


def test_hydra_multirun_end_to_end(sqlite_uri, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "config.yaml").write_text(CONFIG)
    (app_dir / "app.py").write_text(APP)
    sweep_dir = tmp_path / "multirun"
    db = sqlite_path(sqlite_uri)
    proc = subprocess.run(
        [sys.executable, "app.py", "--multirun", "pruning.method=dense,dm3d", f"tracking.db_path={db}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=app_dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Callback" not in proc.stderr, proc.stderr[-3000:]  # Hydra's warning for a failed callback
    parent = parent_run_id_for_job(sweep_dir)
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("synthetic_kitti/callbacks")
    children = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    assert sorted(r.data.params["pruning.method"] for r in children) == ["dense", "dm3d"]
    assert client.get_run(parent).info.status == "FINISHED"
    table = pd.read_csv(sweep_dir / "report" / "report.csv").set_index("method")
    assert table.loc["dm3d", "delta_map"] == pytest.approx(-0.1)
    assert table.loc["dm3d", "flops_reduction"] == pytest.approx(2.0)


def test_swept_overrides_and_job_run_names(tmp_path):
    """The parent is named by what varies (command line and sweeper presets); each job by
    <method>@<target> plus its own value of every other swept key."""
    from dm3d_exp.pipeline.app import run_name
    from dm3d_exp.pipeline.callbacks import swept_overrides

    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["pruning.method=dm3d,lamp", "pruning.flops_target=0.5",
                                                             "+calib.seed=8", "tracking=off"]},
                                      "sweeper": {"params": {"seed": "1,2", "eval.split": "val"}}}})
    assert swept_overrides(cfg) == {"pruning.method": "dm3d,lamp", "seed": "1,2"}
    assert run_name("lamp", 0.25, ["pruning.flops_target=0.25", "calib.num_frames=32", "seed=2"],
                    {"pruning.flops_target": "0.5,0.25", "seed": "1,2"}) == "lamp@0.25 seed=2"
    assert run_name("lamp", 0.25, ["dataset.root=/a/very/long/path"], {}) == "lamp@0.25"
