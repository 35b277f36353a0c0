"""``dm3d-report``: method x FLOPs-target table and Pareto plot from the runs in MLflow (never recomputes).

    dm3d-report [--tracking-uri URI] (--experiment NAME | --parent RUN_ID) --out DIR

writes ``DIR/report.md``, ``DIR/report.csv`` and ``DIR/pareto.png``. :func:`runs_frame` and
:func:`summary_table` are the same steps for notebooks (notebooks/compare_sweeps.ipynb).

Expected run content (what the jobs log, ARCHITECTURE.md "MLflow layout"): params ``pruning.method``,
``pruning.flops_target``, ``dataset.name``, ``detector.name``; metrics ``pruned/eval/mAP``,
``dense/eval/mAP``, ``pruned/cost/flops_reduction``, ``pruned/cost/flops_ratio``, ``cost/flops_target``,
``time/<stage>_s``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import InputError
from .tracking import PARENT_TAG, ROLE_TAG, check_server, close_dead_runs, sqlite_path
from ..fileio import atomic_write_text

MAP = "metrics.pruned/eval/mAP"
DENSE_MAP = "metrics.dense/eval/mAP"
METHOD = "params.pruning.method"
GROUP_KEYS = ["dataset", "detector", "method", "flops_target"]
_PAGE = 1000


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _all_pages(search, **kwargs) -> list:
    out, token = [], None
    while True:
        page = search(max_results=_PAGE, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _client(uri: str):
    """An MlflowClient for an existing store: a missing sqlite file or a dead server is an InputError."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        check_server(uri)
    elif not db.is_file():
        raise InputError(f"no MLflow database at {db} (tracking URI {uri})")
    return MlflowClient(uri)


def runs_frame(uri: str, experiment: Optional[str] = None, parent: Optional[str] = None) -> pd.DataFrame:
    """One row per job run: the children of run ``parent``, or the runs of ``experiment`` (sweep parent
    runs excluded). Columns: ``run_id``, ``run_name``, ``status``, ``experiment_id``, ``parent_run_id``,
    ``start_time``, ``params.<name>`` (strings, as MLflow returns them) and ``metrics.<key>`` (floats).

    Raises :class:`InputError` when the store, experiment or parent does not exist or holds no runs.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    if (experiment is None) == (parent is None):
        raise InputError("give exactly one of experiment or parent")
    client = _client(uri)
    if parent is not None:
        try:
            client.get_run(parent)
        except MlflowException as e:
            raise InputError(f"MLflow run {parent!r} not found in {uri} ({_one_line(e)})") from e
        exp_ids = [e.experiment_id for e in _all_pages(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)]
        runs = _all_pages(client.search_runs, experiment_ids=exp_ids,
                          filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
        where = f"parent run {parent}"
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None or exp.lifecycle_stage != "active":
            raise InputError(f"MLflow experiment {experiment!r} not found in {uri}")
        runs = [r for r in _all_pages(client.search_runs, experiment_ids=[exp.experiment_id])
                if r.data.tags.get(ROLE_TAG) != "sweep"]
        where = f"experiment {experiment!r}"
    if not runs:
        raise InputError(f"{where} has no job runs in {uri}")
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
               "experiment_id": r.info.experiment_id, "parent_run_id": r.data.tags.get(PARENT_TAG),
               "start_time": pd.Timestamp(r.info.start_time, unit="ms")}
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("start_time", kind="stable").reset_index(drop=True)


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _text(df: pd.DataFrame, col: str) -> pd.Series:
    return df[col].fillna("").astype(str) if col in df else pd.Series("", index=df.index, dtype=str)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate FINISHED job runs into one row per (dataset, detector, method, flops_target).

    Columns: ``runs`` (count), ``map`` (``pruned/eval/mAP``; for method ``dense`` falling back to
    ``dense/eval/mAP``), ``map_dense`` (the run's ``dense/eval/mAP``, else the mean mAP of the
    ``dense``-method runs of the same dataset and detector), ``delta_map`` = map - map_dense,
    ``flops_reduction`` (``pruned/cost/flops_reduction``), ``flops_ratio`` (``pruned/cost/flops_ratio``;
    both 1 for ``dense`` runs that do not log them), ``time_s`` (sum of ``time/*_s``), ``map_ci_low`` /
    ``map_ci_high`` (the frame-bootstrap 95 % interval of mAP) and ``delta_ci_low`` / ``delta_ci_high``
    (the paired interval of mAP - dense mAP, same frames and resamples): means over the cell's runs. ``flops_target`` is the ``cost/flops_target`` metric, else the param.
    """
    runs = df[df["status"] == "FINISHED"] if "status" in df else df
    if METHOD not in runs or runs.empty:
        raise InputError("no finished runs with the param pruning.method (runs logged by dm3d jobs)")
    method = _text(runs, METHOD)
    dense = method == "dense"
    dense_metric = _num(runs, DENSE_MAP)

    def dense_fill(s: pd.Series, value) -> pd.Series:
        return s.mask(dense & s.isna(), value)

    long = pd.DataFrame({
        "dataset": _text(runs, "params.dataset.name"),
        "detector": _text(runs, "params.detector.name"),
        "method": method,
        "flops_target": _num(runs, "metrics.cost/flops_target").fillna(_num(runs, "params.pruning.flops_target")),
        "run_id": runs["run_id"] if "run_id" in runs else runs.index.astype(str),
        "map": dense_fill(_num(runs, MAP), dense_metric),
        "flops_reduction": dense_fill(_num(runs, "metrics.pruned/cost/flops_reduction"), 1.0),
        "flops_ratio": dense_fill(_num(runs, "metrics.pruned/cost/flops_ratio"), 1.0),
        "map_ci_low": dense_fill(_num(runs, "metrics.pruned/eval/mAP_ci_low"), _num(runs, "metrics.dense/eval/mAP_ci_low")),
        "map_ci_high": dense_fill(_num(runs, "metrics.pruned/eval/mAP_ci_high"), _num(runs, "metrics.dense/eval/mAP_ci_high")),
        "delta_ci_low": _num(runs, "metrics.pruned/eval/delta_mAP_ci_low"),
        "delta_ci_high": _num(runs, "metrics.pruned/eval/delta_mAP_ci_high"),
    })
    dense_ref = long[dense].groupby(["dataset", "detector"])["map"].mean()
    fallback = pd.Series([dense_ref.get((d, m), np.nan) for d, m in zip(long["dataset"], long["detector"])],
                         index=long.index, dtype=float)
    long["map_dense"] = dense_metric.fillna(fallback)
    long["delta_map"] = long["map"] - long["map_dense"]
    time_cols = [c for c in runs.columns if c.startswith("metrics.time/") and c.endswith("_s")]
    long["time_s"] = runs[time_cols].astype(float).sum(axis=1, min_count=1) if time_cols else np.nan
    table = long.groupby(GROUP_KEYS, dropna=False, sort=True).agg(
        runs=("run_id", "count"), map=("map", "mean"), map_dense=("map_dense", "mean"),
        delta_map=("delta_map", "mean"), flops_reduction=("flops_reduction", "mean"),
        flops_ratio=("flops_ratio", "mean"), time_s=("time_s", "mean"), map_ci_low=("map_ci_low", "mean"),
        map_ci_high=("map_ci_high", "mean"), delta_ci_low=("delta_ci_low", "mean"),
        delta_ci_high=("delta_ci_high", "mean"))
    return table.reset_index()


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def markdown(table: pd.DataFrame, source: str = "") -> str:
    """The report as Markdown: a method x FLOPs-target grid of "mAP (delta)" and the full table."""
    many = table[["dataset", "detector"]].drop_duplicates().shape[0] > 1
    index = ["dataset", "detector", "method"] if many else ["method"]
    def cell(r) -> str:
        text = _fmt(r.map)
        if not math.isnan(r.delta_map):
            text += f" ({r.delta_map:+.4f}"
            if not (math.isnan(r.delta_ci_low) or math.isnan(r.delta_ci_high)):
                verdict = "within noise" if r.delta_ci_low <= 0 <= r.delta_ci_high else \
                    ("loss" if r.delta_ci_high < 0 else "gain")
                text += f", 95 % {r.delta_ci_low:+.4f} to {r.delta_ci_high:+.4f}: {verdict}"
            text += ")"
        return text

    cells = table.assign(cell=[cell(r) for r in table.itertuples(index=False)])
    grid = cells.pivot_table(index=index, columns="flops_target", values="cell", aggfunc="first",
                             dropna=False).fillna("")
    grid.columns = [f"target {float(c):g}" for c in grid.columns]
    parts = ["# DM3D pruning report", ""]
    if source:
        parts += [f"Source: {source}", ""]
    parts += ["## mAP (delta vs dense, with its paired frame-bootstrap interval) by method and FLOPs target", "", _md_table(grid.reset_index()), "",
              "## All cells (means over runs)", "", _md_table(table), "", "![Pareto](pareto.png)", ""]
    return "\n".join(parts)


def write_report(frame: pd.DataFrame, out_dir, source: str = "") -> pd.DataFrame:
    """Write ``report.md``, ``report.csv`` and ``pareto.png`` (each atomically) into ``out_dir`` from a
    :func:`runs_frame` frame; return the :func:`summary_table`."""
    from ..plots import pareto_plot

    table = summary_table(frame)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.csv", table.to_csv(index=False))
    pareto_plot(table, out / "pareto.png")
    atomic_write_text(out / "report.md", markdown(table, source))
    return table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dm3d-report", description="Method x FLOPs-target table (md + csv) and "
                                "mAP-vs-FLOPs Pareto plot from the runs in MLflow (never recomputes).")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "mlflow.db",
                   help="MLflow tracking URI (sqlite:///..., http://...) or a sqlite file path "
                        "(default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--experiment", help="MLflow experiment (study) name, e.g. synthetic_kitti/pointpillars_synth")
    which.add_argument("--parent", help="run id of a sweep's parent run (mlflow_parent_run_id.txt in the sweep dir)")
    p.add_argument("--out", type=Path, help="output directory (required unless --repair)")
    p.add_argument("--repair", action="store_true",
                   help="only end as KILLED the runs (of --experiment, default: all) left RUNNING by dm3d "
                        "processes of this host that are gone (kill -9, a dead sweep launcher)")
    return p


def main(argv=None) -> int:
    """Entry point of ``dm3d-report``; returns 0, or 2 with a one-line ``error:`` on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    uri = args.tracking_uri
    if "://" not in uri:
        uri = f"sqlite:///{Path(uri).expanduser().resolve()}"
    if args.repair:
        if args.parent:
            parser.error("--repair takes --experiment (or nothing: every experiment), not --parent")
        try:
            _client(uri)  # the store must exist
            closed = close_dead_runs(uri, args.experiment)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"closed {len(closed)} run(s) left RUNNING by dead processes" + (f": {', '.join(closed)}" if closed else ""))
        return 0
    if not (args.experiment or args.parent) or args.out is None:
        parser.error("give --experiment or --parent, and --out (or --repair)")
    try:
        frame = runs_frame(uri, experiment=args.experiment, parent=args.parent)
        source = f"experiment {args.experiment!r}" if args.experiment else f"parent run {args.parent}"
        table = write_report(frame, args.out, source=f"{source} ({uri})")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.md, report.csv, pareto.png ({len(table)} cells from {len(frame)} runs)")
    return 0
