"""MLflow tracking: store URI resolution, one-time store migration, and a per-job run context manager.

Layout (ARCHITECTURE.md, "MLflow layout"): one experiment per study, one parent run per multirun
(tag ``dm3d.role=sweep``), one child run per job (tag ``dm3d.role=job`` and ``mlflow.parentRunId``).
Everything goes through :class:`mlflow.tracking.MlflowClient` with an explicit URI: no global MLflow
state, so several trackers (or a tracker and the sweep callback) can live in one process.

With the sqlite backend every experiment gets an explicit artifact location next to the database
(``<db dir>/mlruns/<experiment slug>``): MLflow's default is ``./mlruns`` relative to whatever the
working directory of the process that created the store happened to be.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from ..errors import InputError

ROLE_TAG = "dm3d.role"
PARENT_TAG = "mlflow.parentRunId"
TRUNCATED_TAG = "dm3d.truncated_params"
# MLflow 3's UI opens experiments of this kind on the runs table (model development), not the GenAI traces view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
_TRUNCATION_MARK = "...[truncated]"
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def tracking_uri(cfg_tracking: Mapping, root_dir) -> Optional[str]:
    """Resolve the tracking config (``backend``, ``uri``, ``db_path``) to an MLflow tracking URI.

    ``sqlite`` -> ``sqlite:///<abs path>`` (``db_path`` relative to ``root_dir``, default
    ``<root_dir>/mlflow.db``); ``server`` -> ``uri`` (http/https); ``off`` -> ``None``.
    """
    backend = cfg_tracking.get("backend", "sqlite")
    if backend in ("off", None, False):  # YAML 1.1 reads a bare `off` as False
        return None
    if backend == "sqlite":
        db = Path(cfg_tracking.get("db_path") or "mlflow.db").expanduser()
        if not db.is_absolute():
            db = Path(root_dir) / db
        return f"sqlite:///{db.resolve()}"
    if backend == "server":
        uri = cfg_tracking.get("uri")
        if not uri or urlparse(str(uri)).scheme not in ("http", "https"):
            raise InputError(f"tracking.uri={uri!r} is not valid with tracking=server, expected an http(s) URI "
                             "such as http://127.0.0.1:5000")
        return str(uri).rstrip("/")
    raise InputError(f"tracking.backend={backend!r} is not valid, expected one of: sqlite, server, off")


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI, or ``None`` for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    # not urlparse: `sqlite:////abs/x.db` would give the path `//abs/x.db`
    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0]))


def _artifact_dir(uri: str) -> Optional[Path]:
    db = sqlite_path(uri)
    return None if db is None else db.parent / "mlruns"


def ensure_store(uri: Optional[str]) -> None:
    """Make the store usable before jobs write to it; idempotent.

    sqlite: create the directory and the database and run MLflow's schema migrations, under a file lock
    (concurrent first-time migrations of one fresh file fail, STACK.md). Call it in the launching process
    before parallel jobs start; calling it again (from a job) only verifies the schema.
    server: check ``<uri>/health`` so a wrong URI fails before any job starts.
    """
    if uri is None:
        return
    db = sqlite_path(uri)
    if db is None:
        check_server(uri)
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    if db.is_dir():  # sqlite would retry opening it for minutes
        raise InputError(f"MLflow store {uri} is not usable ({db} is a directory); fix tracking.db_path or use "
                         "tracking=off")
    lock_dir = _artifact_dir(uri)
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_dir / f".{db.name}.migrate.lock"), timeout=300):
            # The client builds (and caches per process) the store: creates tables on a fresh file,
            # verifies the schema on an existing one.
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # unwritable directory, not a database, a schema MLflow cannot migrate
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"MLflow store {uri} is not usable ({type(e).__name__}: {first}); fix tracking.db_path "
                         "or use tracking=off") from None


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`InputError` unless the MLflow server at ``uri`` answers ``GET /health``.

    (Otherwise an unreachable server surfaces only after MLflow's REST client has exhausted its retries.)
    """
    try:  # non-2xx answers raise HTTPError, a URLError
        urllib.request.urlopen(f"{uri}/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"MLflow server at {uri} is not healthy ({e}); start it or use another tracking URI") from e


def get_or_create_experiment(client, name: str, uri: str) -> str:
    """Return the id of experiment ``name``, creating it if needed (safe against a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        art = _artifact_dir(uri)
        location = None
        if art is not None:
            slug = re.sub(r"[^\w.-]+", "_", name).strip("_") or "experiment"
            location = str(art / f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}")
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # another job created it first
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise InputError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore "
                         f"--experiment-id {exp.experiment_id}) or choose another name")
    for k, v in EXPERIMENT_TAGS.items():  # experiments created by older versions
        if k not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, k, v)
    return exp.experiment_id


def source_tags() -> dict[str, str]:
    """The run's source as MLflow shows it (``dm3d``) and this process's command line."""
    return {"mlflow.source.name": "dm3d", "mlflow.source.type": "LOCAL",
            "dm3d.command": " ".join(["dm3d", *sys.argv[1:]])[:5000]}


def start_run(uri: str, experiment: str, run_name: str, tags: Optional[Mapping[str, str]] = None) -> str:
    """Create a RUNNING run in ``experiment`` (created if needed) and return its id.

    MLflow's context tags (user, git commit) are added; the source is named ``dm3d`` (MLflow would show the
    interpreter's argv[0], ``-c`` under ``python -c``, a venv path otherwise) and the command line is kept in
    ``dm3d.command``; ``tags`` win over them.
    """
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment, uri)
    tags = {**owner_tags(), **source_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    run = client.create_run(exp_id, tags=resolve_tags(tags), run_name=run_name)
    return run.info.run_id


def _proc_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (Linux /proc, clock ticks since boot), or None if unknown/gone:
    with the pid it identifies the process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesised command name


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a run (host, pid, its start time): what repair checks."""
    pid = os.getpid()
    return {"dm3d.host": socket.gethostname(), "dm3d.pid": str(pid), "dm3d.proc_start": _proc_start(pid) or ""}


def owner_alive(tags: Mapping[str, str]) -> Optional[bool]:
    """Whether the process in a run's owner tags still runs: None when it cannot be told (another host,
    or a run logged without owner tags)."""
    if tags.get("dm3d.host") != socket.gethostname() or not tags.get("dm3d.pid", "").isdigit():
        return None
    pid = int(tags["dm3d.pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    start = tags.get("dm3d.proc_start")
    return not start or _proc_start(pid) == start


def close_dead_runs(uri: str, experiment: Optional[str] = None) -> list[str]:
    """End as KILLED every RUNNING dm3d run (job or sweep parent) of ``experiment`` (None: every active
    experiment) whose owner process on this host is gone (kill -9, a crashed launcher), tagging
    ``dm3d.closed_by``. Runs of other hosts, or without owner tags, are left alone. Returns their ids."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if experiment is None:
        exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    else:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    closed = []
    if not exp_ids:
        return closed
    token = None
    while True:
        page = client.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        for run in page:
            tags = run.data.tags
            if ROLE_TAG in tags and owner_alive(tags) is False:
                client.set_tag(run.info.run_id, "dm3d.closed_by",
                               f"repair: owner process {tags['dm3d.pid']} on {tags['dm3d.host']} is gone")
                client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
        token = page.token
        if not token:
            return closed


def flatten(cfg_dict: Mapping, sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b.c": leaf}``; lists and scalars are leaves.

    An OmegaConf ``DictConfig`` is resolved first; an empty mapping becomes an empty-dict leaf.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg_dict, DictConfig):
        cfg_dict = OmegaConf.to_container(cfg_dict, resolve=True)
    out: dict[str, Any] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{sep}{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value:
                walk(value, name)
            else:
                out[name] = value

    walk(cfg_dict, "")
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that runs end as KILLED and temp files are cleaned up."""


class terminate_on_sigterm:
    """Context manager: while active, SIGTERM raises :class:`Terminated` (main thread only; elsewhere, or
    where signals are unavailable, a no-op). The previous handler is restored on exit."""

    def __enter__(self):
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Terminated(f"signal {signum}")

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self._previous)
        return False


def _param_value(value: Any) -> str:
    """Stringify a config leaf: strings as-is, everything else as JSON (``null``, ``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


class JobTracker:
    """One MLflow run for one job, as a context manager.

    ``JobTracker(uri, experiment, run_name, parent_run_id=None, tags=None)``: on enter, creates the
    experiment if needed and starts a run tagged ``dm3d.role=job`` (and ``mlflow.parentRunId`` when a
    parent is given) and the owner tags (:func:`owner_tags`); on exit, terminates it as FINISHED, FAILED
    (an exception; its first line in the tag ``dm3d.error``) or KILLED (Ctrl-C, or SIGTERM turned into
    :class:`Terminated` by :func:`terminate_on_sigterm`). With ``uri=None`` (tracking=off) every method is a no-op and :attr:`run_id` is ``None``.
    """

    def __init__(self, uri: Optional[str], experiment: str, run_name: str,
                 parent_run_id: Optional[str] = None, tags: Optional[Mapping[str, str]] = None):
        self.uri = uri
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self._tags = dict(tags or {})
        self._client = None
        self._run_id: Optional[str] = None

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id (``None`` when tracking is off or the run has not started)."""
        return self._run_id

    @property
    def enabled(self) -> bool:
        """Whether calls reach MLflow (a started run with a tracking URI)."""
        return self._run_id is not None

    def __enter__(self) -> "JobTracker":
        if self.uri is None:
            return self
        from mlflow.tracking import MlflowClient

        ensure_store(self.uri)
        tags = {ROLE_TAG: "job", **self._tags}
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        self._run_id = start_run(self.uri, self.experiment, self.run_name, tags)
        self._client = MlflowClient(self.uri)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.enabled:
            if exc_type is None:
                status = "FINISHED"
            else:
                status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
                first = (str(exc).strip().splitlines() or [exc_type.__name__])[0]
                self.set_tags({"dm3d.error": f"{exc_type.__name__}: {first}"[:5000]})
            self._client.set_terminated(self._run_id, status)
        return False

    def log_params(self, flat: Mapping[str, Any]) -> None:
        """Log flat params (see :func:`flatten`), values stringified, in batches of MLflow's limit.

        Keys get characters MLflow rejects replaced by ``_``; values longer than MLflow's limit
        (``MAX_PARAM_VAL_LENGTH``, 6000 characters in MLflow 3.x) are truncated and their keys listed in
        the tag ``dm3d.truncated_params`` (log the full config as an artifact to keep it).
        """
        if not self.enabled:
            return
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params, truncated = [], []
        for key, value in flat.items():
            key = _BAD_NAME_CHARS.sub("_", str(key))
            text = _param_value(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                text = text[:MAX_PARAM_VAL_LENGTH - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK
                truncated.append(key)
            params.append(Param(key, text))
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self._run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        if truncated:
            self.set_tags({TRUNCATED_TAG: ",".join(truncated)})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics (``pruned/eval/mAP``, ``cost/flops_ratio``, ``time/<stage>_s``...) in batches.

        Values go through ``float`` (booleans such as ``cache/<stage>_hit`` become 0/1).
        """
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self._client.log_batch(self._run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path, artifact_path: Optional[str] = None) -> None:
        """Upload a file, or a directory's contents, under ``artifact_path`` of the run."""
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self._run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self._run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values stringified)."""
        if not self.enabled:
            return
        from mlflow.entities import RunTag
        from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self._run_id, tags=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
