"""DevkitKittiMetric scores each prediction against its own frame, whatever ``sample_idx`` the loader sets."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.mmdet3d

CLASSES = ["Pedestrian", "Cyclist", "Car"]


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    from dm3d_exp.data import SynthParams, ensure_dataset

    return ensure_dataset(SynthParams(num_train=2, num_val=6, seed=3), root=tmp_path_factory.mktemp("m") / "ds")


def _gt_as_predictions(root, indices, shift_m=0.0):
    """Samples of plain mmdet3d KittiDataset (sample_idx = list position) predicting their own GT boxes,
    moved ``shift_m`` metres along x (LiDAR frame)."""
    from mmengine.structures import InstanceData
    from mmdet3d.datasets import KittiDataset

    from dm3d_exp.adapters.runtime import setup_mmdet3d

    setup_mmdet3d()
    pipeline = [dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=4, use_dim=4),
                dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True),
                dict(type="Pack3DDetInputs", keys=["points", "gt_bboxes_3d", "gt_labels_3d"])]
    ds = KittiDataset(data_root=str(root) + "/", ann_file="kitti_infos_val.pkl",
                      data_prefix=dict(pts="training/velodyne_reduced"), pipeline=pipeline,
                      metainfo=dict(classes=CLASSES), test_mode=False, filter_empty_gt=False, indices=indices)
    samples = []
    for i in range(len(ds)):
        sample = ds[i]["data_samples"]
        gt = sample.gt_instances_3d
        boxes = gt.bboxes_3d.clone()
        boxes.tensor[:, 0] += shift_m
        sample.pred_instances_3d = InstanceData(bboxes_3d=boxes, labels_3d=gt.labels_3d,
                                                scores_3d=torch.linspace(1.0, 0.5, len(gt.labels_3d)))
        sample.pred_instances = InstanceData()
        samples.append(sample)
    return ds, samples


def _metric(root, ds, samples, drop_lidar_path=False):
    from dm3d_exp.adapters.kitti_metric import DevkitKittiMetric

    metric = DevkitKittiMetric(ann_file=str(root / "kitti_infos_val.pkl"), metric="bbox", classes=["Car", "Pedestrian", "Cyclist"])
    metric.dataset_meta = ds.metainfo
    dicts = [s.to_dict() for s in samples]
    if drop_lidar_path:
        for d in dicts:
            d.pop("lidar_path")
    metric.process({}, dicts)
    return metric.compute_metrics(metric.results)


def _direct(root, frame_positions, samples):
    """The evaluator called on explicitly paired (GT info, predictions) of the given val positions."""
    from dm3d_exp.adapters.kitti_metric import DevkitKittiMetric, gt_objects_from_info
    from dm3d_exp.kitti.eval import evaluate

    infos = pickle.loads((root / "kitti_infos_val.pkl").read_bytes())
    label2cat = {v: k for k, v in infos["metainfo"]["categories"].items()}
    metric = DevkitKittiMetric(ann_file=str(root / "kitti_infos_val.pkl"))
    gts, dts = [], []
    for pos, sample in zip(frame_positions, samples):
        info = infos["data_list"][pos]
        gts.append(gt_objects_from_info(info, label2cat))
        dts.append(metric._det_objects(sample.pred_instances_3d.to_dict(), info, CLASSES))
    return evaluate(gts, dts, classes=("Car", "Pedestrian", "Cyclist"), report_undetected=True)


def test_subset_of_plain_kitti_dataset_scored_against_its_own_frames(val_root):
    indices = [4, 1, 5]
    ds, samples = _gt_as_predictions(val_root, indices)
    assert [s.sample_idx for s in samples] == [0, 1, 2]  # positions, not frame ids (what broke the lookup)
    got = _metric(val_root, ds, samples)
    want = _direct(val_root, indices, samples)
    assert got["Car/3d/moderate/R40"] == pytest.approx(want["Car/3d/moderate/R40"])
    assert {k: got[k] for k in want} == pytest.approx(want)
    assert got["Car/bev/easy/R40"] > 0  # GT-as-detections on the right frames do match

    # the same predictions, each scored against the wrong frame (rotated pairing), score lower
    rotated = _direct(val_root, indices[1:] + indices[:1], samples)
    assert sum(rotated.values()) < sum(want.values())


def test_boxes_moved_off_target_lower_the_score(val_root):
    indices = [0, 2, 3]
    ds, exact = _gt_as_predictions(val_root, indices)
    _, shifted = _gt_as_predictions(val_root, indices, shift_m=1.0)
    a, b = _metric(val_root, ds, exact), _metric(val_root, ds, shifted)
    assert b["Car/3d/moderate/R40"] < a["Car/3d/moderate/R40"]


def test_missing_frame_is_a_clear_error(val_root):
    ds, samples = _gt_as_predictions(val_root, [0])
    with pytest.raises(KeyError, match="sample_idx 0"):  # frame ids of the val split start at num_train
        _metric(val_root, ds, samples, drop_lidar_path=True)
    assert np.isfinite(_metric(val_root, ds, samples)["mAP"])
