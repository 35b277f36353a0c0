"""dm3d-report and the compare_sweeps notebook read back exactly what the jobs logged."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from dm3d_exp.pipeline import report
from dm3d_exp.errors import InputError
from dm3d_exp.pipeline.tracking import sqlite_path, start_run

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare_sweeps.ipynb"
EXP = "synthetic_kitti/report"


def test_report_matches_logged(store_uri, make_sweep, expected_summary, check_table, check_png, tmp_path, capsys):
    parent, jobs = make_sweep(store_uri, EXP, seed=1)
    expected = expected_summary(jobs)

    out = tmp_path / "by_experiment"
    assert report.main(["--tracking-uri", store_uri, "--experiment", EXP, "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    table = pd.read_csv(out / "report.csv")
    check_table(table, expected)
    assert set(table["detector"]) == {"pointpillars_synth"} and set(table["dataset"]) == {"synthetic_kitti"}
    check_png(out / "pareto.png")
    md = (out / "report.md").read_text()
    dm3d_half = expected[("dm3d", 0.5)]
    lo, hi = dm3d_half["delta_ci_low"], dm3d_half["delta_ci_high"]
    verdict = "within noise" if lo <= 0 <= hi else ("loss" if hi < 0 else "gain")
    assert f"{dm3d_half['map']:.4f} ({dm3d_half['delta_map']:+.4f}, 95 % {lo:+.4f} to {hi:+.4f}: {verdict})" in md

    # the same runs through the parent, and the frame the notebook sees
    out2 = tmp_path / "by_parent"
    assert report.main(["--tracking-uri", store_uri, "--parent", parent, "--out", str(out2)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "report.csv"), table)
    frame = report.runs_frame(store_uri, experiment=EXP)
    assert sorted(frame["run_id"]) == sorted(j["run_id"] for j in jobs)  # parent run excluded
    assert set(frame["parent_run_id"]) == {parent}


def test_summary_table_means_and_dense_fallback():
    frame = pd.DataFrame({
        "run_id": ["d", "a1", "a2", "r"],
        "status": ["FINISHED", "FINISHED", "FINISHED", "RUNNING"],
        "params.pruning.method": ["dense", "dm3d", "dm3d", "dm3d"],
        "params.pruning.flops_target": ["1.0", "0.5", "0.5", "0.5"],
        "metrics.dense/eval/mAP": [0.7, np.nan, np.nan, np.nan],
        "metrics.pruned/eval/mAP": [np.nan, 0.6, 0.5, 0.0],
        "metrics.pruned/cost/flops_reduction": [np.nan, 2.0, 2.2, 9.0],
        "metrics.time/prune_s": [1.0, 2.0, np.nan, 5.0],
        "metrics.time/evaluate_s": [3.0, 4.0, np.nan, 5.0],
    })
    table = report.summary_table(frame).set_index("method")
    assert list(table.index) == ["dense", "dm3d"]
    assert table.loc["dense", "map"] == 0.7 and table.loc["dense", "flops_reduction"] == 1.0
    dm3d = table.loc["dm3d"]
    assert dm3d["runs"] == 2 and dm3d["flops_target"] == 0.5
    assert dm3d["map"] == pytest.approx(0.55) and dm3d["map_dense"] == pytest.approx(0.7)
    assert dm3d["delta_map"] == pytest.approx(-0.15) and dm3d["flops_reduction"] == pytest.approx(2.1)
    assert dm3d["time_s"] == pytest.approx(6.0)  # a run without timings does not count as 0 s
    with pytest.raises(InputError, match="no finished runs"):
        report.summary_table(frame.iloc[3:])


def test_report_bad_input(sqlite_uri, tmp_path, capsys):
    start_run(sqlite_uri, "only_parent", "sweep", {"dm3d.role": "sweep"})
    missing_db = tmp_path / "nowhere" / "mlflow.db"
    cases = [
        (["--tracking-uri", sqlite_uri, "--experiment", "no/such"], "experiment 'no/such' not found"),
        (["--tracking-uri", sqlite_uri, "--parent", "0" * 32], "not found"),
        (["--tracking-uri", sqlite_uri, "--experiment", "only_parent"], "has no job runs"),
        (["--tracking-uri", str(missing_db), "--experiment", EXP], "no MLflow database"),
    ]
    for argv, message in cases:
        assert report.main(argv + ["--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not missing_db.exists() and not (tmp_path / "out").exists()
    assert sqlite_path(sqlite_uri).is_file()


def test_notebook_executes(sqlite_uri, make_sweep, expected_summary, monkeypatch):
    _, jobs = make_sweep(sqlite_uri, EXP, seed=2)
    monkeypatch.setenv("DM3D_TRACKING_URI", sqlite_uri)
    monkeypatch.setenv("DM3D_EXPERIMENT", EXP)
    monkeypatch.delenv("DM3D_PARENT", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    expected = expected_summary(jobs)
    assert "delta_map" in html and f"{expected[('uniform', 0.5)]['map']:.6f}" in html
    assert any("image/png" in o.get("data", {}) for o in outputs)
