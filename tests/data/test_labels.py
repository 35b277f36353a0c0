"""Labels, calibration, info files and GT database agree with each other and with the geometry."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from dm3d_exp.data import generate_frame
from dm3d_exp.data.calib import IMAGE_HEIGHT, IMAGE_WIDTH, cam_to_lidar, image_fov_mask, kitti_calib
from dm3d_exp.data.frame import frame_rng
from dm3d_exp.data.scene import sample_scene
from dm3d_exp.data.writer import MMDET3D_KITTI_CLASSES
from dm3d_exp.kitti.format import read_calib, read_label_file, read_velodyne


def _corners(loc, hwl, ry):
    h, w, l = hwl
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1]) * -h
    z = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    rot = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    return (rot @ np.stack([x, y, z])).T + loc


def _in_box(points, loc, hwl, ry, calib, tol=0.0):
    h, w, l = hwl
    c = cam_to_lidar(np.asarray(loc)[None], calib)[0]
    yaw = -ry - np.pi / 2
    d = points[:, :3] - c
    lx = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1]
    ly = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
    return (np.abs(lx) <= l / 2 + tol) & (np.abs(ly) <= w / 2 + tol) & (d[:, 2] >= -tol) & (d[:, 2] <= h + tol)


def _frames(root, params):
    for i in range(params.num_frames):
        fid = f"{i:06d}"
        tr = root / "training"
        yield (i, read_label_file(tr / "label_2" / f"{fid}.txt"), read_calib(tr / "calib" / f"{fid}.txt"),
               read_velodyne(tr / "velodyne" / f"{fid}.bin"), read_velodyne(tr / "velodyne_reduced" / f"{fid}.bin"))


def test_calib_and_reduced_cloud(small_dataset, small_params):
    ref = kitti_calib()
    for _, _, calib, full, reduced in _frames(small_dataset, small_params):
        for k in ref:
            np.testing.assert_allclose(calib[k], ref[k], rtol=1e-9, atol=1e-12)
        assert np.array_equal(full[image_fov_mask(full, calib)], reduced)
        az = np.degrees(np.arctan2(full[:, 1], full[:, 0]))
        assert np.abs(az).max() <= small_params.azimuth_half_window_deg + 0.2
        assert 10_000 < len(reduced) < 40_000 and (reduced[:, 3] >= 0).all() and (reduced[:, 3] <= 1).all()


def test_2d_boxes_are_clipped_projections_of_3d_boxes(small_dataset, small_params):
    checked = 0
    for _, objs, calib, _, _ in _frames(small_dataset, small_params):
        for k in np.nonzero(objs.name != "DontCare")[0]:
            corners = _corners(objs.location[k], objs.dimensions[k], objs.rotation_y[k])
            if (corners[:, 2] <= 0.1).any():
                continue  # partly behind the camera: near-plane clipped (covered by the generator)
            hom = np.c_[corners, np.ones(8)] @ calib["P2"].T
            uv = hom[:, :2] / hom[:, 2:]
            full = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
            box = np.clip(full, 0, [IMAGE_WIDTH - 1, IMAGE_HEIGHT - 1, IMAGE_WIDTH - 1, IMAGE_HEIGHT - 1])
            np.testing.assert_allclose(objs.bbox[k], box, atol=0.006)
            inside = np.array_equal(box, full)
            assert (objs.truncated[k] == 0) == inside or abs(objs.truncated[k]) < 0.005
            alpha = objs.rotation_y[k] - np.arctan2(objs.location[k, 0], objs.location[k, 2])
            alpha = (alpha + np.pi) % (2 * np.pi) - np.pi
            assert abs(np.angle(np.exp(1j * (alpha - objs.alpha[k])))) < 0.011
            assert objs.occluded[k] in (0, 1, 2)
            checked += 1
    assert checked >= 20


def test_object_points_inside_labelled_boxes(small_params):
    inside = total = 0
    for i in range(small_params.num_frames):
        frame = generate_frame(small_params, i)
        pts = frame.points[frame.fov]
        owner = frame.point_obj[frame.fov]
        objs = frame.labels
        for k in np.nonzero(objs.name != "DontCare")[0]:
            mine = pts[owner == frame.label_obj[k]]
            assert len(mine) > 0
            # range noise (0.02 m sd) may push a return slightly out of its box
            assert _in_box(mine, objs.location[k], objs.dimensions[k], objs.rotation_y[k], frame.calib, 0.1).all()
            inside += int(_in_box(mine, objs.location[k], objs.dimensions[k], objs.rotation_y[k], frame.calib).sum())
            total += len(mine)
    assert inside / total > 0.9


def test_objects_do_not_overlap_each_other_or_buildings(small_params):
    shapely = pytest.importorskip("shapely.geometry")
    for i in range(small_params.num_frames):
        scene = sample_scene(frame_rng(small_params.seed, i), small_params)

        def rect(cx, cy, hl, hw, yaw):
            c, s = np.cos(yaw), np.sin(yaw)
            pts = [(cx + c * a * hl - s * b * hw, cy + s * a * hl + c * b * hw) for a, b in
                   ((1, 1), (-1, 1), (-1, -1), (1, -1))]
            return shapely.Polygon(pts)

        objs = [rect(o.center[0], o.center[1], o.size[0] / 2, o.size[1] / 2, o.yaw) for o in scene.objects]
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                assert objs[a].intersection(objs[b]).area < 1e-9
        background = [rect(*b[[0, 1, 3, 4, 6]]) for b in scene.boxes if b[7] < 0]
        background += [shapely.Point(c[0], c[1]).buffer(c[4]) for c in scene.cyls if c[5] < 0]
        for o in objs:
            assert all(o.intersection(g).area < 1e-9 for g in background)


def test_infos_match_labels_and_points(small_dataset, small_params):
    for split, ids in (("train", range(small_params.num_train)),
                       ("val", range(small_params.num_train, small_params.num_frames))):
        infos = pickle.loads((small_dataset / f"kitti_infos_{split}.pkl").read_bytes())
        assert infos["metainfo"]["dataset"] == "kitti" and infos["metainfo"]["info_version"] == "1.1"
        assert infos["metainfo"]["categories"]["Car"] == 2 and infos["metainfo"]["categories"]["DontCare"] == -1
        assert [d["sample_idx"] for d in infos["data_list"]] == list(ids)
        split_file = (small_dataset / "ImageSets" / f"{split}.txt").read_text().split()
        assert split_file == [f"{i:06d}" for i in ids]
        for info in infos["data_list"]:
            fid = f"{info['sample_idx']:06d}"
            objs = read_label_file(small_dataset / "training" / "label_2" / f"{fid}.txt")
            reduced = read_velodyne(small_dataset / "training" / "velodyne_reduced" / f"{fid}.bin")
            calib = read_calib(small_dataset / "training" / "calib" / f"{fid}.txt")
            assert info["lidar_points"]["lidar_path"] == f"{fid}.bin" and info["lidar_points"]["num_pts_feats"] == 4
            cam2 = info["images"]["CAM2"]
            assert (cam2["height"], cam2["width"]) == (375, 1242)
            np.testing.assert_allclose(np.array(cam2["lidar2img"]), np.array(cam2["cam2img"]) @ cam2["lidar2cam"])
            assert len(info["instances"]) == len(objs)
            for k, inst in enumerate(info["instances"]):
                name = objs.name[k]
                assert inst["bbox_label"] == inst["bbox_label_3d"] == (
                    MMDET3D_KITTI_CLASSES.index(name) if name != "DontCare" else -1)
                h, w, l = objs.dimensions[k]
                assert inst["bbox_3d"] == pytest.approx([*objs.location[k], l, h, w, objs.rotation_y[k]])
                assert inst["bbox"] == pytest.approx(list(objs.bbox[k]))
                if name == "DontCare":
                    assert inst["num_lidar_pts"] == -1 and inst["index"] == -1
                else:
                    n = int(_in_box(reduced, objs.location[k], objs.dimensions[k], objs.rotation_y[k], calib).sum())
                    assert inst["num_lidar_pts"] == n > 0


def test_gt_database(small_dataset, small_params):
    db = pickle.loads((small_dataset / "kitti_dbinfos_train.pkl").read_bytes())
    assert "Car" in db and "DontCare" not in db
    entries = [e for v in db.values() for e in v]
    assert sorted(e["group_id"] for e in entries) == list(range(len(entries)))
    for e in entries:
        assert e["image_idx"] < small_params.num_train
        pts = read_velodyne(small_dataset / e["path"]) if e["num_points_in_gt"] else np.zeros((0, 4))
        assert len(pts) == e["num_points_in_gt"]
        box = e["box3d_lidar"]
        assert box.dtype == np.float32 and box.shape == (7,)
        if len(pts):  # points are stored relative to the box's bottom centre
            c, s = np.cos(box[6]), np.sin(box[6])
            assert (np.abs(c * pts[:, 0] + s * pts[:, 1]) <= box[3] / 2 + 1e-3).all()
            assert ((pts[:, 2] >= -1e-3) & (pts[:, 2] <= box[5] + 1e-3)).all()
