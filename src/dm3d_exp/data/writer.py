"""Write the synthetic dataset in the KITTI object layout plus mmdet3d 1.4 info files and GT database.

Layout under the dataset root (as mmdet3d's ``tools/create_data.py kitti`` produces for real KITTI)::

    training/velodyne/NNNNNN.bin          scanned azimuth window (float32 x y z reflectance)
    training/velodyne_reduced/NNNNNN.bin  points inside the camera-2 image
    training/label_2/NNNNNN.txt           KITTI labels (DontCare rows last)
    training/calib/NNNNNN.txt
    ImageSets/{train,val,trainval}.txt
    kitti_infos_{train,val,trainval}.pkl  mmdet3d v2 infos (info_version 1.1), lidar_path relative to
                                          data_prefix pts='training/velodyne_reduced'
    kitti_dbinfos_train.pkl, kitti_gt_database/{idx}_{class}_{i}.bin   ObjectSample database
    manifest.json                         generator version, parameters, counts (written last)

No camera images are rendered: ``images.CAM2.img_path`` names the KITTI file that would hold it, and
``cam_instances`` (monocular annotations) are not written.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from ..kitti.format import KittiObjects, write_calib, write_label_file, write_velodyne
from .calib import IMAGE_HEIGHT, IMAGE_WIDTH, cam_to_lidar
from .frame import generate_frame, points_in_label_box
from .params import GENERATOR_VERSION, SynthParams

# mmdet3d KittiDataset.METAINFO['classes'] order (bbox_label values); other names (DontCare) map to -1.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MMDET3D_KITTI_CLASSES = ("Pedestrian", "Cyclist", "Car", "Van", "Truck", "Person_sitting", "Tram", "Misc")


def _extend(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def kitti_difficulty(objs: KittiObjects) -> np.ndarray:
    """KITTI difficulty per object (0 easy, 1 moderate, 2 hard, -1 none), as mmdet3d's kitti_data_utils."""
    height = objs.bbox[:, 3] - objs.bbox[:, 1]
    masks = [(objs.occluded <= o) & (height > h) & (objs.truncated <= t)
             for h, o, t in ((40, 0, 0.15), (25, 1, 0.3), (25, 2, 0.5))]
    easy, moderate, hard = masks
    diff = np.full(len(objs), -1, dtype=np.int64)
    diff[np.logical_xor(hard, moderate)] = 2
    diff[np.logical_xor(easy, moderate)] = 1
    diff[easy] = 0
    return diff


def lidar_boxes(objs: KittiObjects, calib: dict) -> np.ndarray:
    """(n, 7) float32 LiDAR boxes x y z(bottom) l w h yaw, as mmdet3d converts camera labels (yaw = -ry - pi/2)."""
    if len(objs) == 0:
        return np.zeros((0, 7), dtype=np.float32)
    xyz = cam_to_lidar(objs.location, calib)
    yaw = -objs.rotation_y - np.pi / 2
    yaw = yaw - np.floor(yaw / (2 * np.pi) + 0.5) * 2 * np.pi
    h, w, l = objs.dimensions.T
    return np.concatenate([xyz, np.stack([l, w, h, yaw], 1)], 1).astype(np.float32)


def build_info(sample_idx: int, objs: KittiObjects, calib: dict, points_reduced: np.ndarray) -> dict:
    """mmdet3d v2 (info_version 1.1) ``data_list`` entry for one KITTI frame, as update_infos_to_v2 writes it.

    ``num_lidar_pts`` counts ``points_reduced`` inside each box (-1 for DontCare), like the KITTI converter.
    """
    P = {k: _extend(calib[k]) for k in ("P0", "P1", "P2", "P3")}
    r0 = _extend(calib["R0_rect"]).astype(np.float32)
    trv2c = _extend(calib["Tr_velo_to_cam"]).astype(np.float32)
    lidar2cam = r0 @ trv2c
    images = {f"CAM{i}": {"cam2img": P[f"P{i}"].tolist(), "lidar2img": (P[f"P{i}"] @ lidar2cam).tolist()}
              for i in range(4)}
    images["CAM2"] = {"img_path": f"{sample_idx:06d}.png", "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH,
                      "cam2img": P["P2"].tolist(), "lidar2img": (P["P2"] @ lidar2cam).tolist(),
                      "lidar2cam": lidar2cam.tolist()}
    images["R0_rect"] = r0.tolist()
    diff = kitti_difficulty(objs)
    instances = []
    n_obj = int((objs.name != "DontCare").sum())
    for i in range(len(objs)):
        name = str(objs.name[i])
        label = MMDET3D_KITTI_CLASSES.index(name) if name in MMDET3D_KITTI_CLASSES else -1
        h, w, l = objs.dimensions[i]
        loc = objs.location[i]
        centre = loc + np.array([0.0, -h / 2, 0.0])  # bottom centre -> gravity centre (camera y points down)
        proj = P["P2"][:3] @ np.append(centre, 1.0)
        npts = -1
        if label >= 0:
            npts = int(points_in_label_box(points_reduced, loc, objs.dimensions[i], objs.rotation_y[i], calib).sum())
        instances.append({
            "bbox": objs.bbox[i].tolist(), "bbox_label": label,
            "bbox_3d": [*loc.tolist(), float(l), float(h), float(w), float(objs.rotation_y[i])],
            "bbox_label_3d": label, "depth": float(proj[2]), "center_2d": (proj[:2] / proj[2]).tolist(),
            "num_lidar_pts": npts, "difficulty": int(diff[i]), "truncated": float(objs.truncated[i]),
            "occluded": int(objs.occluded[i]), "alpha": float(objs.alpha[i]), "score": 0.0,
            "index": i if i < n_obj else -1, "group_id": i,
        })
    return {
        "sample_idx": sample_idx,
        "images": images,
        "lidar_points": {"num_pts_feats": 4, "lidar_path": f"{sample_idx:06d}.bin",
                         "Tr_velo_to_cam": trv2c.tolist(), "Tr_imu_to_velo": _extend(calib["Tr_imu_to_velo"])
                         .astype(np.float32).tolist()},
        "instances": instances,
    }


def infos_file(data_list: list[dict]) -> dict:
    """The pickled top-level dict: metainfo (categories incl. DontCare -1) and data_list."""
    cats = {c: i for i, c in enumerate(MMDET3D_KITTI_CLASSES)}
    if any(inst["bbox_label"] == -1 for info in data_list for inst in info["instances"]):
        cats["DontCare"] = -1
    return {"metainfo": {"categories": cats, "dataset": "kitti", "info_version": "1.1"}, "data_list": data_list}


def _gt_database(root: Path, sample_idx: int, objs: KittiObjects, calib: dict, points_reduced: np.ndarray,
                 info: dict) -> list[dict]:
    """Write one frame's object point files; return db infos (group_id assigned later, in frame order)."""
    keep = np.nonzero(objs.name != "DontCare")[0]
    boxes = lidar_boxes(objs.select(keep), calib)
    out = []
    for i, k in enumerate(keep):
        name = str(objs.name[k])
        mask = points_in_label_box(points_reduced, objs.location[k], objs.dimensions[k], objs.rotation_y[k], calib)
        pts = points_reduced[mask].copy()
        pts[:, :3] -= boxes[i, :3]
        rel = f"kitti_gt_database/{sample_idx}_{name}_{i}.bin"
        write_velodyne(root / rel, pts)
        out.append({"name": name, "path": rel, "image_idx": sample_idx, "gt_idx": i, "box3d_lidar": boxes[i],
                    "num_points_in_gt": int(len(pts)), "difficulty": int(info["instances"][k]["difficulty"]),
                    "score": 0.0})
    return out


def _write_frame(task: tuple[dict, int, bool, str]) -> tuple[int, dict, list[dict], dict]:
    """Generate frame ``index`` and write its files under ``root`` (worker entry point)."""
    params_dict, index, is_train, root_s = task
    root = Path(root_s)
    frame = generate_frame(SynthParams.from_dict(params_dict), index)
    reduced = frame.points[frame.fov]
    tr = root / "training"
    fid = f"{index:06d}"
    write_velodyne(tr / "velodyne" / f"{fid}.bin", frame.points)
    write_velodyne(tr / "velodyne_reduced" / f"{fid}.bin", reduced)
    write_label_file(tr / "label_2" / f"{fid}.txt", frame.labels)
    write_calib(tr / "calib" / f"{fid}.txt", frame.calib)
    info = build_info(index, frame.labels, frame.calib, reduced)
    db = _gt_database(root, index, frame.labels, frame.calib, reduced, info) if is_train else []
    names, counts = np.unique(frame.labels.name, return_counts=True)
    stats = {"points": int(len(frame.points)), "points_reduced": int(len(reduced)),
             "objects": {str(n): int(c) for n, c in zip(names, counts)}}
    return index, info, db, stats


def _canonical(obj):
    """Copy with every string interned and arrays on the built-in dtype instances, so that pickle's memo
    (object identity), hence the bytes, depend only on the values, not on which process built which part."""
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, np.ndarray):  # fresh array on the shared built-in dtype instance
        return np.frombuffer(obj.tobytes(), dtype=np.dtype(obj.dtype.str)).reshape(obj.shape).copy()
    return obj


def _dump_pickle(path: Path, obj) -> None:
    atomic_write_bytes(path, pickle.dumps(_canonical(obj), protocol=4))


def generate_dataset(params: SynthParams, root: str | os.PathLike, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate all frames of ``params`` into the (new or empty) directory ``root``; return the manifest.

    Frames are independent (each has its own seeded generator), so they are produced by ``workers``
    processes (default: all CPUs) in any order and the output bytes do not depend on ``workers``.
    ``progress(done, total)`` is called after each frame. ``manifest.json`` is written last.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, params.num_frames))
    tasks = [(params.to_dict(), i, i < params.num_train, str(root)) for i in range(params.num_frames)]
    results: list = [None] * len(tasks)
    if workers == 1:
        it = map(_write_frame, tasks)
        pool = None
    else:
        # one BLAS thread per worker: the frames are the parallelism (inherited by the spawned workers)
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: "1" for k in _THREAD_VARS})
        try:
            pool = multiprocessing.get_context("spawn").Pool(workers)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        it = pool.imap_unordered(_write_frame, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
    try:
        for done, res in enumerate(it, 1):
            results[res[0]] = res
            if progress is not None:
                progress(done, len(tasks))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    split_ids = {"train": range(params.num_train), "val": range(params.num_train, params.num_frames)}
    split_ids["trainval"] = range(params.num_frames)
    for split, ids in split_ids.items():
        atomic_write_bytes(root / "ImageSets" / f"{split}.txt", "".join(f"{i:06d}\n" for i in ids).encode())
        _dump_pickle(root / f"kitti_infos_{split}.pkl", infos_file([results[i][1] for i in ids]))
    db_infos: dict[str, list] = {}
    for group_id, entry in enumerate(e for i in split_ids["train"] for e in results[i][2]):
        entry["group_id"] = group_id
        db_infos.setdefault(entry["name"], []).append(entry)
    (root / "kitti_gt_database").mkdir(exist_ok=True)
    _dump_pickle(root / "kitti_dbinfos_train.pkl", db_infos)
    objects: dict[str, int] = {}
    for r in results:
        for k, v in r[3]["objects"].items():
            objects[k] = objects.get(k, 0) + v
    manifest = {
        "generator_version": GENERATOR_VERSION, "params": params.to_dict(), "digest": params.digest(),
        "counts": {"train": params.num_train, "val": params.num_val,
                   "points": sum(r[3]["points"] for r in results),
                   "points_reduced": sum(r[3]["points_reduced"] for r in results),
                   "objects": dict(sorted(objects.items())),
                   "gt_database": {k: len(v) for k, v in sorted(db_infos.items())}},
    }
    atomic_write_bytes(root / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest

