"""mmdet3d 1.4's own KittiDataset loads the generated root with the standard KITTI LiDAR pipelines."""
from __future__ import annotations

import numpy as np
import pytest

from dm3d_exp.data.writer import lidar_boxes
from dm3d_exp.kitti.format import read_calib, read_label_file, read_velodyne

CLASSES = ["Pedestrian", "Cyclist", "Car"]
RANGE = [0, -40, -3, 70.4, 40, 1]


@pytest.fixture(scope="module")
def mmdet3d():
    try:
        import mmdet3d.datasets  # noqa: F401
        from mmdet3d.utils import register_all_modules
    except ImportError as e:
        pytest.skip(f"mmdet3d not importable yet ({e})")
    register_all_modules()
    from mmdet3d.registry import DATASETS

    return DATASETS


def _train_pipeline(root):
    """mmdet3d's KITTI 3-class LiDAR training pipeline (configs/_base_/datasets/kitti-3d-3class.py) without
    ObjectNoise, whose numba compilation alone takes ~20 s."""
    db_sampler = dict(
        data_root=str(root) + "/", info_path=str(root / "kitti_dbinfos_train.pkl"), rate=1.0,
        prepare=dict(filter_by_difficulty=[-1], filter_by_min_points=dict(Car=5, Pedestrian=5, Cyclist=5)),
        classes=CLASSES, sample_groups=dict(Car=12, Pedestrian=6, Cyclist=6),
        points_loader=dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=4, use_dim=4))
    return [
        dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=4, use_dim=4),
        dict(type="LoadAnnotations3D", with_bbox_3d=True, with_label_3d=True),
        dict(type="ObjectSample", db_sampler=db_sampler),
        dict(type="RandomFlip3D", flip_ratio_bev_horizontal=0.5),
        dict(type="GlobalRotScaleTrans", rot_range=[-0.78539816, 0.78539816], scale_ratio_range=[0.95, 1.05]),
        dict(type="PointsRangeFilter", point_cloud_range=RANGE),
        dict(type="ObjectRangeFilter", point_cloud_range=RANGE),
        dict(type="PointShuffle"),
        dict(type="Pack3DDetInputs", keys=["points", "gt_labels_3d", "gt_bboxes_3d"]),
    ]


def test_kitti_dataset_train_pipeline(mmdet3d, small_dataset, small_params, monkeypatch):
    # mmdet3d 1.4's DataBaseSampler still uses np.long, removed in numpy 1.24 (the project pins numpy<2)
    monkeypatch.setattr(np, "long", np.int64, raising=False)
    ds = mmdet3d.build(dict(
        type="KittiDataset", data_root=str(small_dataset), ann_file="kitti_infos_train.pkl",
        data_prefix=dict(pts="training/velodyne_reduced"), pipeline=_train_pipeline(small_dataset),
        modality=dict(use_lidar=True, use_camera=False), metainfo=dict(classes=CLASSES), box_type_3d="LiDAR"))
    assert len(ds) == small_params.num_train
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        fid = f"{i:06d}"
        objs = read_label_file(small_dataset / "training" / "label_2" / f"{fid}.txt")
        calib = read_calib(small_dataset / "training" / "calib" / f"{fid}.txt")
        keep = np.isin(objs.name, CLASSES)
        ann = info["ann_info"]
        np.testing.assert_allclose(ann["gt_bboxes_3d"].tensor.numpy(), lidar_boxes(objs.select(keep), calib),
                                   atol=1e-4)
        assert [CLASSES[k] for k in ann["gt_labels_3d"]] == list(objs.name[keep])
        assert info["lidar_path"].endswith(f"training/velodyne_reduced/{fid}.bin")
        sample = ds[i]
        pts = sample["inputs"]["points"]
        assert pts.shape[1] == 4 and len(pts) > 5000
        labels = sample["data_samples"].gt_instances_3d.labels_3d
        assert len(labels) >= keep.sum() - 2  # ObjectSample adds objects; range filter may drop far ones


def test_kitti_dataset_test_mode(mmdet3d, small_dataset, small_params):
    pipeline = [dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=4, use_dim=4),
                dict(type="PointsRangeFilter", point_cloud_range=RANGE),
                dict(type="Pack3DDetInputs", keys=["points"])]
    ds = mmdet3d.build(dict(
        type="KittiDataset", data_root=str(small_dataset), ann_file="kitti_infos_val.pkl",
        data_prefix=dict(pts="training/velodyne_reduced"), pipeline=pipeline, test_mode=True,
        modality=dict(use_lidar=True, use_camera=False), metainfo=dict(classes=CLASSES), box_type_3d="LiDAR"))
    assert len(ds) == small_params.num_val
    raw = read_velodyne(small_dataset / "training" / "velodyne_reduced" / f"{small_params.num_train:06d}.bin")
    pts = ds[0]["inputs"]["points"].numpy()
    assert 0.9 * len(raw) < len(pts) <= len(raw)
