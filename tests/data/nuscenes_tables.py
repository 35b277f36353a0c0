"""A nuScenes-format root (v1.0-mini tables, samples/, sweeps/) written from the real sample of
../shared/data/nuscenes_sample: its LIDAR_TOP sweep, its 69 boxes, its ego pose and sensor calibrations.

Two scenes under official v1.0-mini split names (scene-0061: train, scene-0103: val); the train scene
has two key frames (the second one's previous LIDAR_TOP record is the first's, i.e. one sweep), the val
scene one. Every key frame carries the same cloud and boxes (lidar frame), written to the tables in the
global frame as nuScenes stores them, so a converter that reads the tables must give the sample's boxes
back (its boxes of the 10 detection classes). The six cameras have calibration and sample_data records (the converter reads them) but no image
files (no converter step opens them).
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CATEGORY = {"car": "vehicle.car", "truck": "vehicle.truck", "trailer": "vehicle.trailer", "bus": "vehicle.bus.rigid",
            "construction_vehicle": "vehicle.construction", "bicycle": "vehicle.bicycle",
            "motorcycle": "vehicle.motorcycle", "pedestrian": "human.pedestrian.adult",
            "traffic_cone": "movable_object.trafficcone", "barrier": "movable_object.barrier"}
SCENES = (("scene-0061", 2), ("scene-0103", 1))  # (name, key frames): v1.0-mini train, val


def _pose(matrix) -> tuple[list, list]:
    """(translation, rotation wxyz) of a 4x4 rigid transform (its rotation re-orthonormalised)."""
    m = np.asarray(matrix, dtype=np.float64)
    u, _, vt = np.linalg.svd(m[:3, :3])
    return m[:3, 3].tolist(), list(Quaternion(matrix=u @ vt).elements)


def sample_info(shared: Path) -> dict:
    with open(shared / "nuscenes_sample" / "n015-2018-07-24-11-22-45+0800.pkl", "rb") as f:
        data = pickle.load(f)
    return {"info": data["data_list"][0], "classes": {v: k for k, v in data["metainfo"]["categories"].items()}}


def write_root(shared: Path, root: Path, version: str = "v1.0-mini") -> dict:
    """Write the root; returns the sample info it came from and the key frames per scene."""
    src = sample_info(shared)
    info, classes = src["info"], src["classes"]
    cloud = shared / "nuscenes_sample" / Path(info["lidar_points"]["lidar_path"]).name
    tables = {t: [] for t in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
                              "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    tables["visibility"].append({"token": "4", "level": "v80-100", "description": "visible"})
    tables["sensor"] = [{"token": f"sensor-{ch}", "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"}
                        for ch in ("LIDAR_TOP", *CAMERAS)]
    t, r = _pose(info["lidar_points"]["lidar2ego"])
    tables["calibrated_sensor"].append({"token": "cs-LIDAR_TOP", "sensor_token": "sensor-LIDAR_TOP", "translation": t,
                                        "rotation": r, "camera_intrinsic": []})
    for cam in CAMERAS:
        t, r = _pose(info["images"][cam]["cam2ego"])
        tables["calibrated_sensor"].append({"token": f"cs-{cam}", "sensor_token": f"sensor-{cam}", "translation": t,
                                            "rotation": r, "camera_intrinsic": np.asarray(info["images"][cam]["cam2img"])[:3, :3].tolist()})
    tables["category"] = [{"token": f"cat-{c}", "name": n, "description": c} for c, n in CATEGORY.items()]
    ego_t, ego_r = _pose(info["ego2global"])
    l2e, e2g = np.asarray(info["lidar_points"]["lidar2ego"]), np.asarray(info["ego2global"])
    l2g = e2g @ l2e
    q_l2g = Quaternion(ego_r) * Quaternion(_pose(l2e)[1])
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    (root / "maps").mkdir()
    base_us = int(round(info["timestamp"] * 1e6))
    frames = {}
    for s, (scene, n_frames) in enumerate(SCENES):
        log = f"log-{s}"
        tables["log"].append({"token": log, "logfile": f"n015-log{s}", "vehicle": "n015", "date_captured": "2018-07-24",
                              "location": "singapore-onenorth"})
        samples = [f"sample-{s}-{k}" for k in range(n_frames)]
        frames[scene] = samples
        prev_lidar = ""
        for k, token in enumerate(samples):
            ts = base_us + 10_000_000 * s + 500_000 * k
            tables["sample"].append({"token": token, "timestamp": ts, "scene_token": f"scene-{s}",
                                     "prev": samples[k - 1] if k else "", "next": samples[k + 1] if k + 1 < n_frames else ""})
            tables["ego_pose"].append({"token": f"ego-{token}", "timestamp": ts, "translation": ego_t, "rotation": ego_r})
            name = f"samples/LIDAR_TOP/{token}__LIDAR_TOP__{ts}.pcd.bin"
            shutil.copyfile(cloud, root / name)
            lidar = f"sd-{token}-LIDAR_TOP"
            records = [(lidar, "LIDAR_TOP", name, "pcd", 0, 0)]
            records += [(f"sd-{token}-{cam}", cam, f"samples/{cam}/{token}__{cam}__{ts}.jpg", "jpg", 900, 1600)
                        for cam in CAMERAS]
            for sd, channel, filename, fmt, h, w in records:
                tables["sample_data"].append({
                    "token": sd, "sample_token": token, "ego_pose_token": f"ego-{token}",
                    "calibrated_sensor_token": f"cs-{channel}", "timestamp": ts, "fileformat": fmt,
                    "is_key_frame": True, "height": h, "width": w, "filename": filename,
                    "prev": prev_lidar if channel == "LIDAR_TOP" else "", "next": ""})
            if prev_lidar:
                next(d for d in tables["sample_data"] if d["token"] == prev_lidar)["next"] = lidar
            prev_lidar = lidar
            for i, inst in enumerate(info["instances"]):
                if inst["bbox_label_3d"] < 0:  # a class outside the 10 (mmdet3d keeps it as -1): not written
                    continue
                x, y, z, l, w, h, yaw = inst["bbox_3d"]
                centre = (l2g @ np.array([x, y, z, 1.0]))[:3]
                rot = q_l2g * Quaternion(axis=[0, 0, 1], angle=yaw)
                ann, instance = f"ann-{token}-{i}", f"inst-{token}-{i}"
                tables["instance"].append({"token": instance, "category_token": f"cat-{classes[inst['bbox_label_3d']]}",
                                           "nbr_annotations": 1, "first_annotation_token": ann,
                                           "last_annotation_token": ann})
                tables["sample_annotation"].append({
                    "token": ann, "sample_token": token, "instance_token": instance, "visibility_token": "4",
                    "attribute_tokens": [], "translation": centre.tolist(), "size": [w, l, h],
                    "rotation": list(rot.elements), "prev": "", "next": "",
                    "num_lidar_pts": int(inst["num_lidar_pts"]), "num_radar_pts": int(inst["num_radar_pts"])})
        tables["scene"].append({"token": f"scene-{s}", "log_token": log, "nbr_samples": n_frames, "name": scene,
                                "description": "written from the shared nuScenes sample",
                                "first_sample_token": samples[0], "last_sample_token": samples[-1]})
    tables["map"].append({"token": "map-0", "log_tokens": [l["token"] for l in tables["log"]],
                          "category": "semantic_prior", "filename": "maps/semantic_prior.png"})
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "maps" / "semantic_prior.png")  # devkit loads it
    (root / version).mkdir()
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return {"info": info, "classes": classes, "frames": frames}
