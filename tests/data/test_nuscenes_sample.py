"""nuScenes-format input on the real sample (../shared/data/nuscenes_sample: one LIDAR_TOP sweep with its
mmdet3d info pkl, 69 boxes): mmdet3d's nuScenes dataset and test pipeline read it; the devkit-function
metric (no nuScenes tables needed) scores boxes from it as expected; and `dm3d` runs every stage on the
model-zoo CenterPoint (random init) over it."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

ZOO = "mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py"


@pytest.fixture(scope="module")
def nus_root(shared_data, tmp_path_factory):
    """A nuScenes root as mmdet3d's converter lays it out, around the sample (train = val = the sweep)."""
    src = shared_data / "nuscenes_sample"
    root = tmp_path_factory.mktemp("nus")
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    for cloud in src.glob("*.pcd.bin"):
        os.symlink(cloud, root / "samples" / "LIDAR_TOP" / cloud.name)
    (pkl,) = src.glob("*.pkl")
    for split in ("train", "val"):
        shutil.copy(pkl, root / f"nuscenes_infos_{split}.pkl")
    return root, pickle.loads(pkl.read_bytes())


def test_sample_reads_through_mmdet3d_with_its_boxes_and_points(nus_root):
    from dm3d_exp.adapters.data import build_dataset
    from dm3d_exp.adapters.detector import load_config

    root, info = nus_root
    ds = build_dataset(load_config(ZOO), root, "nuscenes", "val")
    assert len(ds) == 1
    item = ds[0]
    points = item["inputs"]["points"]
    cloud = next((root / "samples" / "LIDAR_TOP").glob("*.bin"))
    raw = np.fromfile(cloud, dtype=np.float32).reshape(-1, 5)
    assert raw.shape == (34688, 5)
    # the info lists no earlier sweeps: LoadPointsFromMultiSweeps pads with 9 copies of this one (points
    # within 1 m removed), then the range filter; every point is one of the sweep's own
    pts = points.numpy()
    assert 6 * len(raw) < len(pts) < 10 * len(raw)
    known = {tuple(p) for p in np.round(raw[:, :3], 4)}
    assert all(tuple(p) in known for p in np.round(pts[:: 97, :3], 4))
    assert len(ds.metainfo["classes"]) == 10 and len(info["data_list"][0]["instances"]) == 69
    assert Path(item["data_samples"].metainfo["lidar_path"]).name == info["data_list"][0]["lidar_points"]["lidar_path"]

@pytest.mark.slow
def test_dm3d_prunes_the_zoo_centerpoint_on_the_sample(nus_root, tmp_path):
    from zoo_centerpoint_run import run_zoo_centerpoint

    root, _ = nus_root
    summary = run_zoo_centerpoint(root, tmp_path, "eval.distortion_frames=1")
    assert abs(summary["pruned/cost/flops_reduction"] - 2.0) < 0.05
    assert 0.3 < summary["pruned/cost/sparsity"] < 1.0
    assert len(list((tmp_path / "cache" / "prune").glob("*/pruned.pth"))) == 1
    _, info = nus_root
    boxes, names, _ = _sample_gt(info)
    cars = sum(1 for b, n in zip(boxes, names) if n == "car" and np.hypot(*b[:2]) <= 50)
    assert summary["dense/eval/num_gt/car"] == summary["pruned/eval/num_gt/car"] == cars > 0
    assert 0.0 <= summary["pruned/eval/mAP"] <= 100.0


def _sample_gt(info):
    cats = {v: k for k, v in info["metainfo"]["categories"].items()}
    inst = [i for i in info["data_list"][0]["instances"] if i["num_lidar_pts"] > 0 and i["bbox_label_3d"] >= 0]
    return (np.array([i["bbox_3d"] for i in inst]), [cats[i["bbox_label_3d"]] for i in inst],
            np.array([i["velocity"] for i in inst]))


def test_devkit_scores_the_samples_boxes_as_expected(nus_root):
    """Ground truth as detections: AP 100 for every class with boxes in range, zero translation error; the
    same boxes moved 1.5 m: crowded classes lose AP, and with one box per class each is matched only at the
    2 m and 4 m thresholds (AP exactly 50, translation error 1.5 m);
    a class whose boxes are all beyond its range (nuScenes class_range) has no ground truth at all."""
    from nuscenes.eval.common.config import config_factory

    from dm3d_exp.adapters.nuscenes_metric import detection_boxes, devkit_scores

    _, info = nus_root
    boxes, names, vel = _sample_gt(info)
    classes = sorted(set(names))
    token = "t"
    gt = {token: detection_boxes(token, boxes, names, vel)}
    scores = np.linspace(0.9, 0.5, len(boxes))
    exact = devkit_scores(gt, {token: detection_boxes(token, boxes, names, vel, scores)}, classes)
    rng = config_factory("detection_cvpr_2019").class_range
    in_range = {n: sum(1 for b, m in zip(boxes, names) if m == n and np.hypot(*b[:2]) <= rng[n]) for n in classes}
    for n in classes:
        assert exact[f"num_gt/{n}"] == in_range[n]
        if in_range[n]:
            assert exact[f"{n}/AP"] == pytest.approx(100.0)
            assert exact[f"{n}/trans_err"] == pytest.approx(0.0, abs=1e-9)
        else:
            assert f"{n}/AP" not in exact
    assert exact["mAP"] == pytest.approx(100.0) and sum(in_range.values()) > 10
    moved = boxes.copy()
    moved[:, 0] += 1.5
    shifted = devkit_scores(gt, {token: detection_boxes(token, moved, names, vel, scores)}, classes)
    crowded = [n for n in classes if in_range[n] > 5]
    assert crowded and all(shifted[f"{n}/AP"] < 75.0 for n in crowded)
    first = {}  # one in-range box per class: nothing of its class to match instead
    for k, (b, n) in enumerate(zip(boxes, names)):
        if np.hypot(*b[:2]) <= rng[n]:
            first.setdefault(n, k)
    idx = sorted(first.values())
    one = {token: detection_boxes(token, boxes[idx], [names[k] for k in idx], vel[idx])}
    alone = devkit_scores(one, {token: detection_boxes(token, moved[idx], [names[k] for k in idx], vel[idx],
                                                        scores[idx])}, classes)
    assert len(first) >= 4
    for n in first:
        assert alone[f"{n}/AP_0.5"] == alone[f"{n}/AP_1.0"] == 0.0
        assert alone[f"{n}/AP_2.0"] == alone[f"{n}/AP_4.0"] == pytest.approx(100.0)
        assert alone[f"{n}/AP"] == pytest.approx(50.0) and alone[f"{n}/trans_err"] == pytest.approx(1.5)

def test_evaluation_without_tables_uses_the_devkit_metric(nus_root):
    """A tables-free nuScenes root is scored by DevkitNuScenesMetric through mmdet3d's test loop; the info's
    own boxes as predictions score 100 mAP."""
    import torch
    from mmdet3d.structures import LiDARInstance3DBoxes

    from dm3d_exp.adapters.data import build_dataset
    from dm3d_exp.adapters.detector import load_config
    from dm3d_exp.adapters.evaluation import build_metric

    root, info = nus_root
    cfg = load_config(ZOO)
    ds = build_dataset(cfg, root, "nuscenes", "val")
    classes = list(ds.metainfo["classes"])
    with pytest.warns(UserWarning, match="no nuScenes tables"):
        metric = build_metric(cfg, root, "nuscenes", "val", classes)
    assert type(metric).__name__ == "DevkitNuScenesMetric"
    metric.dataset_meta = ds.metainfo
    boxes, names, vel = _sample_gt(info)
    tensor = torch.tensor(np.concatenate([boxes, vel], 1), dtype=torch.float32)
    pred = {"bboxes_3d": LiDARInstance3DBoxes(tensor, box_dim=9), "scores_3d": torch.linspace(0.9, 0.5, len(boxes)),
            "labels_3d": torch.tensor([classes.index(n) for n in names])}
    metric.process({}, [{"pred_instances_3d": pred, "lidar_path": str(root / "samples" / "LIDAR_TOP" /
                                                                    info["data_list"][0]["lidar_points"]["lidar_path"])}])
    result = metric.evaluate(1)
    assert result["mAP"] == pytest.approx(100.0) and result["num_gt/car"] > 0
