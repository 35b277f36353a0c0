"""End-to-end: real `dm3d` Hydra multiruns over a tiny detector and a tiny synthetic dataset.

2 methods x 2 FLOPs targets against a real `mlflow server`: child runs under the sweep's parent run,
metrics equal summary.json, sensitivity computed once and reused (cache hits), achieved FLOPs within
the targets, the report table produced; and a joblib run (n_jobs=2) on a fresh sqlite store.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from mlflow.tracking import MlflowClient
from tiny_workspace import REPO, TINY, make_workspace, run_dm3d

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("e2e"))


def _summaries(sweep_root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_root.rglob("summary.json"))]


def test_methods_x_targets_multirun_on_mlflow_server(workspace, mlflow_server, tmp_path):
    run_dm3d(workspace, tmp_path, "--multirun", "pruning=dm3d,uniform", "pruning.flops_target=0.5,0.25",
          "tracking=server", f"tracking.uri={mlflow_server}", "study=e2e/tiny",
          f"hydra.sweep.dir={tmp_path / 'sweep'}")
    summaries = _summaries(tmp_path / "sweep")
    assert len(summaries) == 4
    for s in summaries:
        target = s["config"]["pruning"]["flops_target"]
        assert s["pruned/cost/flops_ratio"] <= target + 1e-9
        assert s["pruned/cost/flops_ratio"] > 0.5 * target  # uses the budget, not far below it
        assert s["pruned/cost/flops_reduction"] == pytest.approx(1 / s["pruned/cost/flops_ratio"])
        assert "dense/eval/mAP" in s and "pruned/eval/mAP" in s and "distortion/measured" in s
        delta = s["pruned/eval/mAP"] - s["dense/eval/mAP"]  # the paired interval holds the observed delta
        assert s["pruned/eval/delta_mAP_ci_low"] <= delta + 1e-9 and delta <= s["pruned/eval/delta_mAP_ci_high"] + 1e-9
    dm3d = [s for s in summaries if s["config"]["pruning"]["method"] == "dm3d"]
    # one sensitivity computation shared by the FLOPs sweep: same key, exactly one miss
    assert len({s["artifacts"]["sensitivity"]["key"] for s in dm3d}) == 1
    assert sorted(s["cache/sensitivity_hit"] for s in dm3d) == [0.0, 1.0]
    assert all(s["cache/calibrate_hit"] == 1.0 for s in summaries[1:]) or sum(
        s["cache/calibrate_hit"] == 0.0 for s in summaries) == 1
    assert all("distortion/predicted" in s for s in dm3d)

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("e2e/tiny")
    parent_id = (tmp_path / "sweep" / "mlflow_parent_run_id.txt").read_text().strip()
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    by_key = {(r.data.params["pruning.method"], float(r.data.params["pruning.flops_target"])): r for r in children}
    for s in summaries:
        run = by_key[(s["config"]["pruning"]["method"], s["config"]["pruning"]["flops_target"])]
        for k in ("pruned/eval/mAP", "pruned/cost/flops_ratio", "cost/flops_target", "cache/sensitivity_hit"):
            if k in s:
                assert run.data.metrics[k] == pytest.approx(s[k]), k
        assert any(a.path == "summary.json" for a in client.list_artifacts(run.info.run_id))
        # the headline section (MLflow's first: a capital prefix), the same numbers as their long names
        assert {"Summary/mAP", "Summary/flops_reduction"} <= set(run.data.metrics)
        m = {k.removeprefix("Summary/"): v for k, v in run.data.metrics.items()}
        assert m["mAP"] == m["pruned/eval/mAP"] and m["mAP_dense"] == m["dense/eval/mAP"]
        assert m["mAP_delta"] == pytest.approx(m["mAP"] - m["mAP_dense"])
        assert m["flops_reduction"] == m["pruned/cost/flops_reduction"] and m["sparsity"] == m["pruned/cost/sparsity"]
        assert m["AP_moderate_Car"] == m["pruned/eval/Car/3d/moderate/R40"]
        assert m["time_total_s"] == pytest.approx(sum(v for k, v in m.items() if k.startswith("time/")))
        assert ("D_predicted" in m) == (s["config"]["pruning"]["method"] == "dm3d") and "D_measured" in m
        note = run.data.tags["mlflow.note.content"]
        assert note.startswith(f"**{s['config']['pruning']['method']}** at ") and f"mAP **{m['mAP']:.1f}**" in note
        assert run.data.tags["mlflow.source.name"] == "dm3d" and run.data.tags["dm3d.command"].startswith("dm3d ")
    assert sorted(r.info.run_name for r in children) == ["dm3d@0.25", "dm3d@0.5", "uniform@0.25", "uniform@0.5"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["dm3d.role"] == "sweep"
    assert parent.info.run_name == "pruning=dm3d,uniform pruning.flops_target=0.5,0.25"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    assert (tmp_path / "sweep" / "report" / "report.csv").is_file()


def test_joblib_launcher_on_fresh_sqlite_has_no_failed_jobs(workspace, tmp_path):
    db = tmp_path / "fresh.db"
    run_dm3d(workspace, tmp_path, "--multirun", "pruning=lamp,erk", "hydra/launcher=local_parallel",
          f"tracking.db_path={db}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    jobs = [r for r in runs if r.data.tags.get("dm3d.role") == "job"]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs)
    assert len(_summaries(tmp_path / "sweep")) == 2


def test_single_stage_and_bad_input(workspace, tmp_path):
    proc = run_dm3d(workspace, tmp_path, "stage=sensitivity", "tracking=off")
    assert "summary" not in proc.stdout  # nothing past the asked stage, no table
    root, data, ckpt = workspace
    bad = subprocess.run([sys.executable, "-c", "from dm3d_exp.cli import main; main()",
                          f"detector.checkpoint={root / 'missing.pth'}", f"dataset.root={data}",
                          "tracking=off", f"cache_dir={root / 'cache'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "error: detector.checkpoint=" in bad.stderr and "does not exist" in bad.stderr
    for key in ("calib.num_frames", "eval.num_frames"):  # more frames than the (4-frame / 3-frame) split
        many = subprocess.run([sys.executable, "-c", "from dm3d_exp.cli import main; main()",
                               "detector=pointpillars_synth", f"detector.mmdet3d_config={TINY}",
                               f"detector.checkpoint={ckpt}", f"dataset.root={data}", "tracking=off",
                               f"cache_dir={tmp_path / 'cache_many'}", "pruning=uniform", "recovery=none", f"{key}=50",
                               *(["calib.num_frames=2"] if key != "calib.num_frames" else []),
                               "calib.reference_frames=2", "progress=false"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        lines = [ln for ln in many.stderr.splitlines() if ln.startswith("error:")]
        assert many.returncode == 2 and len(lines) == 1, many.stderr[-2000:]
        assert f"{key}=50 is larger than the split" in lines[0]


def test_submitit_local_launcher(workspace, tmp_path):
    """The cluster launcher's local twin: jobs run as submitit subprocesses and write their summaries."""
    run_dm3d(workspace, tmp_path, "--multirun", "pruning=uniform", "pruning.flops_target=0.5",
          "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "tracking=off",
          f"hydra.sweep.dir={tmp_path / 'sweep'}")
    (summary,) = _summaries(tmp_path / "sweep")
    assert summary["config"]["pruning"]["method"] == "uniform"
    assert summary["pruned/cost/flops_ratio"] <= 0.5 + 1e-9


PV_RCNN = REPO / "tests" / "pipeline" / "tiny_pv_rcnn_kitti.py"


def _tiny_pv_rcnn(tmp_path):
    """(config, checkpoint) of the tiny PV-RCNN with seeded He-initialised weights."""
    import importlib.util

    from dm3d_exp.adapters.checkpoint import save_checkpoint
    from dm3d_exp.adapters.detector import build_detector

    spec = importlib.util.spec_from_file_location("tiny_detectors", REPO / "tests" / "adapters" / "tiny_detectors.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    torch.manual_seed(0)
    return PV_RCNN, save_checkpoint(tiny.he_init(build_detector(str(PV_RCNN))), tmp_path / "pv.pth")


def test_pv_rcnn_run_prunes_both_stages(workspace, tmp_path):
    """A two-stage detector through every stage: PV-RCNN (CPU point ops) pruned by DM3D to half its FLOPs,
    every part (sparse encoder, VSA, BEV backbone, RPN, RoI head) allocated, RoI-head layers among the
    pruned ones, predicted and measured distortion reported."""
    config, ckpt = _tiny_pv_rcnn(tmp_path)
    run_dm3d(workspace, tmp_path, f"detector.mmdet3d_config={config}", f"detector.checkpoint={ckpt}",
          "pruning=dm3d", "pruning.flops_target=0.5",
          "tracking=off", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    (summary,) = _summaries(tmp_path / "run")
    assert summary["pruned/cost/flops_ratio"] <= 0.5 + 1e-9
    (allocation,) = (tmp_path / "cache").rglob("allocation.json")
    layers = json.loads(allocation.read_text())["layers"]
    assert {n.split(".")[0] for n in layers} >= {"middle_encoder", "points_encoder", "backbone", "rpn_head", "roi_head"}
    assert any(n.startswith("roi_head.") and v["pruned"] > 0 for n, v in layers.items())
    assert summary["distortion/predicted"] > 0 and summary["distortion/measured"] > 0


def _run_summary(workspace, tmp_path, name, *overrides):
    run_dm3d(workspace, tmp_path, "pruning=uniform", "pruning.flops_target=0.5", "tracking=off",
          f"hydra.run.dir={tmp_path / name}", *overrides)
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_calibration_ablation_reuses_the_evaluations_and_holds_out_the_calibration_frames(workspace, tmp_path):
    """Issue 11.3: the metrics' key holds the checkpoint, the eval settings and the MACs reference, so a
    sweep over the calibration size (uniform: same masks) re-evaluates nothing; the measured distortion is
    its own entry, on eval-split frames disjoint from the calibration frames when both use that split."""
    runs = [_run_summary(workspace, tmp_path, f"calib{n}", "calib.split=val", f"calib.num_frames={n}",
                         "eval.distortion_frames=3") for n in (1, 2)]
    a, b = (r["artifacts"] for r in runs)
    assert a["calibrate"]["key"] != b["calibrate"]["key"]
    assert a["evaluate_dense"]["key"] == b["evaluate_dense"]["key"] and a["evaluate"]["key"] == b["evaluate"]["key"]
    assert runs[1]["cache/evaluate_hit"] == 1.0 and runs[0]["cache/evaluate_hit"] == 0.0
    assert a["distortion"]["key"] != b["distortion"]["key"]
    for art in (a, b):
        calib = json.loads((Path(art["calibrate"]["path"]) / "frames.json").read_text())["calib"]
        held_out = json.loads((Path(art["distortion"]["path"]) / "meta.json").read_text())["frames"]
        assert held_out and not set(held_out) & set(calib)
        assert len(held_out) == 3 - len(calib)  # reduced to what the 3-frame val split has left


def test_recovery_stage_keeps_the_masks_and_reports_its_record(workspace, tmp_path):
    """recovery=reconstruct through the real pipeline: the same FLOPs as the zeroed model (masks kept),
    every selected layer reconstructed, its time and record in the summary; a second run is a cache hit.
    (BN re-estimation needs a GT database with every class: the 4-frame workspace has no Cyclist; it is
    tested in tests/adapters/test_reconstruct.py.)"""
    heads = ("pruning.prunable=heads", "pruning.denominator=prunable", "calib.num_frames=4", "recovery.num_frames=null")
    zeroed = _run_summary(workspace, tmp_path, "zeroed", *heads)
    recovered = _run_summary(workspace, tmp_path, "recovered", *heads, "recovery=reconstruct")
    assert recovered["pruned/cost/flops_ratio"] == pytest.approx(zeroed["pruned/cost/flops_ratio"])
    assert recovered["pruned/cost/params_nonzero"] == zeroed["pruned/cost/params_nonzero"]
    n = recovered["pruned/recovery/layers"]
    assert n == 3 and recovered["pruned/recovery/layers_reconstructed"] == n
    assert recovered["pruned/recovery/error_reconstructed_mean"] < recovered["pruned/recovery/error_zeroed_mean"]
    assert recovered["time/recover_s"] > 0 and recovered["cache/recover_hit"] == 0.0
    assert recovered["artifacts"]["evaluate"]["key"] != zeroed["artifacts"]["evaluate"]["key"]
    again = _run_summary(workspace, tmp_path, "again", *heads, "recovery=reconstruct")
    assert again["cache/recover_hit"] == 1.0 and again["pruned/eval/mAP"] == recovered["pruned/eval/mAP"]


def test_recovery_with_too_few_calibration_samples_is_one_line_and_caches_nothing(workspace, tmp_path):
    root, data, ckpt = workspace
    proc = subprocess.run([sys.executable, "-c", "from dm3d_exp.cli import main; main()",
                           "detector=pointpillars_synth", f"detector.mmdet3d_config={TINY}", f"detector.checkpoint={ckpt}",
                           f"dataset.root={data}", f"cache_dir={root / 'cache_rank'}", "calib.num_frames=1",
                           "calib.reference_frames=1", "pruning=uniform", "pruning.flops_target=0.5",
                           "recovery=reconstruct", "recovery.num_frames=1", "recovery.max_sites=4", "tracking=off",
                           "progress=false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "recovery.max_sites=4" in line[0] and "calibration samples for" in line[0]
    assert not list((root / "cache_rank" / "recover").glob("*/meta.json"))


def _artifact_bytes(cache: Path) -> dict[str, bytes]:
    """Every cached artifact's bytes by ``stage/<key>/file`` (meta.json without its wall times and dates)."""
    out = {}
    for p in sorted(cache.rglob("*")):
        if not p.is_file() or p.suffix == ".lock":
            continue
        data = p.read_bytes()
        if p.name == "meta.json":
            meta = json.loads(data)
            data = json.dumps({k: v for k, v in meta.items() if not k.startswith("seconds") and k != "created"},
                              sort_keys=True).encode()
        out[str(p.relative_to(cache))] = data
    return out


def test_identical_bytes_whatever_the_thread_environment(workspace, tmp_path):
    """Issue 10 §0: a run (PV-RCNN: spconv encoder, 2D convs, linear RoI head; sensitivity, DP allocation,
    pruning, reconstruction, evaluation) computed twice with fresh caches under OMP_NUM_THREADS=1 and =2
    gives the same artifact bytes and metrics at ``threads=2`` (spconv's racy CPU sums replaced); another
    ``threads`` value is another cache key."""
    config, ckpt = _tiny_pv_rcnn(tmp_path)
    common = (f"detector.mmdet3d_config={config}", f"detector.checkpoint={ckpt}",
              "pruning=dm3d", "pruning.flops_target=0.5",
              "pruning.prunable='middle_encoder.conv_input,middle_encoder.encoder_layers.encoder_layer1,"
              "middle_encoder.encoder_layers.encoder_layer2'",
              "pruning.min_density=0.3",
              "pruning.denominator=prunable", "recovery=reconstruct", "recovery.num_frames=null",
              "tracking=off")
    summaries = {}
    for name, omp, threads in (("a", "1", 2), ("b", "2", 2), ("one", "2", 1)):
        run_dm3d(workspace, tmp_path, *common, f"threads={threads}", f"cache_dir={tmp_path / ('cache_' + name)}",
              f"hydra.run.dir={tmp_path / name}", env={"OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp})
        (summaries[name],) = _summaries(tmp_path / name)
    a, b = _artifact_bytes(tmp_path / "cache_a"), _artifact_bytes(tmp_path / "cache_b")
    assert any(k.startswith("recover/") and k.endswith("recovered.pth") for k in a)
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    def metrics(summary):  # what a run reports, without wall times and the (different) cache paths
        return {k: v for k, v in summary.items() if "/" in k and not k.startswith("time/") and "seconds" not in k}

    ma, mb = metrics(summaries["a"]), metrics(summaries["b"])
    assert [k for k in ma if ma[k] != mb.get(k)] == [] and "pruned/eval/mAP" in metrics(summaries["a"])
    assert ({n: e["key"] for n, e in summaries["a"]["artifacts"].items()}
            == {n: e["key"] for n, e in summaries["b"]["artifacts"].items()})
    rec = {k: v for k, v in summaries["a"].items() if k.startswith("pruned/recovery/layers_")}
    assert rec["pruned/recovery/layers_reconstructed"] >= 3
    assert set(rec) <= {"pruned/recovery/layers_reconstructed", "pruned/recovery/layers_unpruned_kept_dense"}
    assert summaries["one"]["artifacts"]["calibrate"]["key"] != summaries["a"]["artifacts"]["calibrate"]["key"]
