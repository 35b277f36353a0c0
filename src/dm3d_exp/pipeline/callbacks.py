"""Hydra callback: one MLflow parent run per multirun, with a summary (table + Pareto plot) at the end.

Configured under ``hydra.callbacks`` (conf/config.yaml)::

    mlflow:
      _target_: dm3d_exp.pipeline.callbacks.MlflowSweepCallback
      backend: ${tracking.backend}
      uri: ${tracking.uri}
      db_path: ${tracking.db_path}
      experiment: ${study}

The launching process creates/migrates the store and the parent run before any job starts and writes the
parent's id to ``<hydra.sweep.dir>/mlflow_parent_run_id.txt`` and what varies across the jobs to
``swept_overrides.json`` (the parent is named by it, each job ``<method>@<target>`` plus its values) (first ending as KILLED the runs of the
experiment that dead processes of this host left RUNNING: :func:`tracking.close_dead_runs`); jobs (possibly other processes or
machines) read it with :func:`parent_run_id_for_job`. Hydra turns exceptions raised in callbacks into
warnings, so a tracking failure here never stops the sweep (the jobs then log top-level runs).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..errors import InputError
from .tracking import ROLE_TAG, close_dead_runs, ensure_store, start_run, tracking_uri
from ..fileio import atomic_write_text

PARENT_ID_FILE = "mlflow_parent_run_id.txt"
SWEPT_FILE = "swept_overrides.json"  # the overrides that vary across the sweep's jobs: {key: "v1,v2"}
_MAX_RUN_NAME = 250
log = logging.getLogger(__name__)


def parent_run_id_for_job(sweep_dir) -> Optional[str]:
    """The parent run id written by :class:`MlflowSweepCallback` in ``sweep_dir``, or ``None`` (no sweep
    callback ran, tracking is off, or this is a single run)."""
    try:
        text = (Path(sweep_dir) / PARENT_ID_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def swept_overrides(config: DictConfig) -> dict[str, str]:
    """The overrides that vary across the multirun's jobs, ``{key: "v1,v2,..."}`` in command-line order,
    from the command line and from ``hydra.sweeper.params`` (the sweeps/ presets)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    tokens = task + [f"{k}={v}" for k, v in params.items()]
    out: dict[str, str] = {}
    for o in OverridesParser.create().parse_overrides(tokens):
        if o.is_sweep_override():
            out[o.get_key_element().lstrip("+~")] = ",".join(str(v) for v in o.sweep_iterator())
    return out


def swept_for_job(sweep_dir) -> dict[str, str]:
    """What :class:`MlflowSweepCallback` recorded as varying in ``sweep_dir`` ({} outside a tracked sweep)."""
    try:
        return json.loads((Path(sweep_dir) / SWEPT_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


class MlflowSweepCallback(Callback):
    """Parent MLflow run for a Hydra multirun (see the module docstring).

    Args mirror the ``tracking`` config group: ``backend`` (sqlite | server | off), ``uri`` (server),
    ``db_path`` (sqlite, relative to ``root_dir``, default: the launch directory), ``experiment``.
    """

    def __init__(self, backend: str = "sqlite", uri: Optional[str] = None, db_path: Optional[str] = None,
                 experiment: str = "Default", root_dir: Optional[str] = None):
        self.tracking = {"backend": backend, "uri": uri, "db_path": db_path}
        self.experiment = experiment
        self.root_dir = root_dir

    def _uri(self) -> Optional[str]:
        return tracking_uri(self.tracking, self.root_dir or os.getcwd())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create/migrate the store, start the parent run, publish its id in the sweep directory."""
        uri = self._uri()
        if uri is None:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
        swept = swept_overrides(config)
        name = " ".join(f"{k}={v}" for k, v in swept.items()) or f"sweep {sweep_dir.name}"
        ensure_store(uri)
        closed = close_dead_runs(uri, self.experiment)
        if closed:
            log.warning("closed %d MLflow run(s) left RUNNING by dead processes: %s", len(closed), ", ".join(closed))
        run_id = start_run(uri, self.experiment, name[:_MAX_RUN_NAME], {
            ROLE_TAG: "sweep", "dm3d.sweep_dir": str(sweep_dir), "dm3d.overrides": " ".join(overrides)})
        atomic_write_text(sweep_dir / SWEPT_FILE, json.dumps(swept))
        atomic_write_text(sweep_dir / PARENT_ID_FILE, run_id + "\n")
        log.info("MLflow parent run %s (experiment %r, %s)", run_id, self.experiment, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the children on the parent (report.md/csv + pareto.png under ``report/``), end it."""
        uri = self._uri()
        if uri is None:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        run_id = parent_run_id_for_job(sweep_dir)
        if run_id is None:
            log.warning("no %s in %s: no MLflow parent run to summarise", PARENT_ID_FILE, sweep_dir)
            return
        from mlflow.tracking import MlflowClient

        from . import report

        client = MlflowClient(uri)
        try:
            try:
                frame = report.runs_frame(uri, parent=run_id)
            except InputError as e:  # no job logged a run
                log.warning("MLflow sweep summary skipped: %s", e)
                client.set_tag(run_id, "dm3d.summary", str(e))
                return
            out = sweep_dir / "report"
            report.write_report(frame, out, source=f"parent run {run_id} ({uri})")
            client.log_artifacts(run_id, str(out), "report")
            client.log_metric(run_id, "sweep/jobs", float(len(frame)))
        finally:
            client.set_terminated(run_id, "FINISHED")
