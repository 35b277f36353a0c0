"""nuScenes detection metrics through the nuscenes-devkit's own functions, without the nuScenes tables.

mmdet3d's ``NuScenesMetric`` needs the full ``v1.0-*`` tables (it builds a ``NuScenes`` object for the
ego poses and the evaluation filters). ``DevkitNuScenesMetric`` scores the same predictions with the
devkit's ``accumulate`` / ``calc_ap`` / ``calc_tp`` (center distance, thresholds 0.5 / 1 / 2 / 4 m, the
``detection_cvpr_2019`` config) on boxes taken from the info file alone, with two documented departures:
the class range filter uses the distance from the LiDAR origin (the ego origin is ~1 m away), and there is
no attribute error (attributes live in the tables), so NDS is not reported. Ground-truth boxes without
LiDAR points are dropped, as the devkit does. Results: ``mAP``, ``<class>/AP``, ``<class>/AP_<th>``,
``<class>/<tp>_err``, ``mean_<tp>_err`` and ``num_gt/<class>``.
"""
from __future__ import annotations

from pathlib import PurePath
from typing import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.fileio import load
from mmdet3d.registry import METRICS

TP_METRICS = ("trans_err", "scale_err", "orient_err", "vel_err")


def detection_boxes(token: str, boxes: np.ndarray, names: Sequence[str], velocity: np.ndarray,
                    scores: np.ndarray | None = None):
    """DetectionBoxes of one sample from LiDAR-frame bottom-centre boxes ``(N, 7)`` x, y, z, dx, dy, dz, yaw."""
    from nuscenes.eval.detection.data_classes import DetectionBox

    out = []
    for i, (x, y, z, dx, dy, dz, yaw) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 7)):
        centre = (float(x), float(y), float(z + dz / 2))
        out.append(DetectionBox(sample_token=token, translation=centre, size=(float(dy), float(dx), float(dz)),
                                rotation=(float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))),
                                velocity=tuple(float(v) for v in velocity[i][:2]), ego_translation=centre,
                                detection_name=names[i],
                                detection_score=-1.0 if scores is None else float(scores[i])))
    return out


def _in_range(boxes, class_range: dict) -> list:
    return [b for b in boxes if np.linalg.norm(b.ego_translation[:2]) <= class_range[b.detection_name]]


def devkit_scores(gt: dict[str, list], pred: dict[str, list], classes: Sequence[str]) -> dict[str, float]:
    """AP per class and threshold, mAP and TP errors (the devkit's definitions) of the
    DetectionBoxes ``pred`` against ``gt`` (both {sample token: boxes}); classes without ground truth are
    left out of the means."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp

    cfg = config_factory("detection_cvpr_2019")
    gt_boxes, pred_boxes = EvalBoxes(), EvalBoxes()
    for token in gt:
        gt_boxes.add_boxes(token, _in_range(gt[token], cfg.class_range))
        pred_boxes.add_boxes(token, _in_range(pred.get(token, []), cfg.class_range))
    out: dict[str, float] = {}
    aps, errors = [], {m: [] for m in TP_METRICS}
    for name in classes:
        n_gt = sum(b.detection_name == name for b in gt_boxes.all)
        out[f"num_gt/{name}"] = float(n_gt)
        if not n_gt:
            continue
        per_th = []
        for th in cfg.dist_ths:
            md = accumulate(gt_boxes, pred_boxes, name, center_distance, th)
            per_th.append(calc_ap(md, cfg.min_recall, cfg.min_precision))
            out[f"{name}/AP_{th}"] = 100.0 * per_th[-1]
            if th == cfg.dist_th_tp:
                for m in TP_METRICS:
                    out[f"{name}/{m}"] = float(calc_tp(md, cfg.min_recall, m))
                    if np.isfinite(out[f"{name}/{m}"]):
                        errors[m].append(out[f"{name}/{m}"])
        out[f"{name}/AP"] = 100.0 * float(np.mean(per_th))
        aps.append(out[f"{name}/AP"])
    out["mAP"] = float(np.mean(aps)) if aps else 0.0
    out.update({f"mean_{m}": float(np.mean(v)) for m, v in errors.items() if v})
    return out


@METRICS.register_module()
class DevkitNuScenesMetric(BaseMetric):
    """nuScenes mAP and TP errors from the info file's boxes through the devkit (module docstring)."""

    default_prefix = ""

    def __init__(self, ann_file: str, classes: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.ann_file, self.classes = ann_file, tuple(classes)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample["pred_instances_3d"]
            boxes = pred["bboxes_3d"].tensor.detach().cpu().numpy()
            self.results.append({"lidar_file": PurePath(sample["lidar_path"]).name, "boxes": boxes[:, :7],
                                 "velocity": boxes[:, 7:9] if boxes.shape[1] >= 9 else np.zeros((len(boxes), 2)),
                                 "scores": pred["scores_3d"].detach().cpu().numpy(),
                                 "labels": pred["labels_3d"].detach().cpu().numpy()})

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        infos = load(self.ann_file)
        label2cat = {v: k for k, v in infos["metainfo"]["categories"].items()}
        by_file = {PurePath(i["lidar_points"]["lidar_path"]).name: i for i in infos["data_list"]}
        classes = self.dataset_meta["classes"]
        gt, pred = {}, {}
        for res in results:
            info = by_file[res["lidar_file"]]
            token = info.get("token", res["lidar_file"])
            inst = [i for i in info.get("instances", []) if i["bbox_label_3d"] >= 0 and i.get("num_lidar_pts", 1) > 0
                    and label2cat[i["bbox_label_3d"]] in self.classes]
            gt[token] = detection_boxes(token, np.array([i["bbox_3d"] for i in inst]).reshape(-1, 7),
                                        [label2cat[i["bbox_label_3d"]] for i in inst],
                                        np.array([i.get("velocity", [0.0, 0.0]) for i in inst]).reshape(-1, 2))
            keep = [k for k, lab in enumerate(res["labels"]) if classes[int(lab)] in self.classes]
            pred[token] = detection_boxes(token, res["boxes"][keep], [classes[int(res["labels"][k])] for k in keep],
                                          res["velocity"][keep], res["scores"][keep])
        return devkit_scores(gt, pred, self.classes)
