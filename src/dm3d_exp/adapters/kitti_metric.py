"""mmdet3d metric that scores KITTI-format data with the project's devkit-exact evaluator.

mmdet3d's own ``KittiMetric`` uses a numba-CUDA rotated IoU that needs a GPU (or the CUDA simulator)
and returns IoU 0 or 1/3 for identical rotated boxes (../shared/data/README.md). ``DevkitKittiMetric``
keeps mmdet3d's prediction conversion (``convert_valid_bboxes``: LiDAR -> camera boxes, 2D projection
through P2) and replaces the scoring with :func:`dm3d_exp.kitti.eval.evaluate`. It matches each
prediction to its info by the point-cloud file name (``lidar_path``), not by ``sample_idx``: mmdet3d's
KittiMetric indexes the info list by ``sample_idx``, which plain ``KittiDataset`` sets to the sample's list
position, so subsets (``indices``) and non-contiguous frame ids would be scored against the wrong frames.

Results: ``<Class>/<metric>/<difficulty>/<R40|R11>`` (percent) and ``mAP`` = mean over the evaluated
classes of the moderate 3D AP R40 (the project's headline number).
"""
from __future__ import annotations

from pathlib import PurePath
from typing import Sequence

import numpy as np
from mmengine.fileio import load
from mmdet3d.evaluation.metrics import KittiMetric
from mmdet3d.registry import METRICS

from ..kitti.bootstrap import bootstrap_map, headline_map, interval
from ..kitti.eval import evaluate
from ..kitti.format import EVAL_CLASSES, KittiObjects



def _objects(names, truncated, occluded, alpha, bbox, dims_lhw, loc, ry, score=None) -> KittiObjects:
    n = len(names)
    dims = np.asarray(dims_lhw, dtype=np.float64).reshape(n, 3)[:, [1, 2, 0]]  # lhw -> hwl
    return KittiObjects(np.asarray(names, dtype="<U16").reshape(n), np.asarray(truncated, float).reshape(n),
                        np.asarray(occluded, int).reshape(n), np.asarray(alpha, float).reshape(n),
                        np.asarray(bbox, float).reshape(n, 4), dims, np.asarray(loc, float).reshape(n, 3),
                        np.asarray(ry, float).reshape(n), None if score is None else np.asarray(score, float).reshape(n))


def gt_objects_from_info(info: dict, label2cat: dict[int, str]) -> KittiObjects:
    """Ground truth of one mmdet3d v2 KITTI info (instances with camera ``bbox_3d`` x,y,z,l,h,w,ry)."""
    inst = info.get("instances", [])
    names = [label2cat.get(i["bbox_label"], "DontCare") for i in inst]
    b3d = np.array([i["bbox_3d"] for i in inst], dtype=np.float64).reshape(-1, 7)
    return _objects(names, [i["truncated"] for i in inst], [i["occluded"] for i in inst],
                    [i["alpha"] for i in inst], [i["bbox"] for i in inst], b3d[:, 3:6], b3d[:, :3], b3d[:, 6])


@METRICS.register_module()
class DevkitKittiMetric(KittiMetric):
    """KITTI AP (bbox/bev/3d/aos, easy/moderate/hard, R40/R11) equal to the official devkit's."""

    def __init__(self, *args, classes: Sequence[str] | None = None, bootstrap: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_classes = tuple(classes) if classes else None
        self.bootstrap = int(bootstrap)
        self.bootstrap_values: np.ndarray | None = None  # per-resample mAP of the last compute_metrics

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """KittiMetric's processing, also keeping each sample's point-cloud file name (the lookup key)."""
        start = len(self.results)
        super().process(data_batch, data_samples)
        for res, sample in zip(self.results[start:], data_samples):
            path = sample.get("lidar_path")
            res["lidar_file"] = PurePath(path).name if path else None

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        infos = load(self.ann_file, backend_args=self.backend_args)
        label2cat = {v: k for k, v in infos["metainfo"]["categories"].items()}
        by_file = {PurePath(info["lidar_points"]["lidar_path"]).name: info for info in infos["data_list"]}
        by_idx = {info["sample_idx"]: info for info in infos["data_list"]}
        class_names = self.dataset_meta["classes"]
        gts, dts = [], []
        for res in results:
            info = self._info_of(res, by_file, by_idx)
            gts.append(gt_objects_from_info(info, label2cat))
            dts.append(self._det_objects(res["pred_instances_3d"], info, class_names))
        classes = self.eval_classes or tuple(c for c in EVAL_CLASSES if c in class_names)
        ap = evaluate(gts, dts, classes=classes, report_undetected=True)
        ap["mAP"] = headline_map(ap, classes)
        for c in classes:  # how many ground-truth boxes each AP rests on
            ap[f"num_gt/{c}"] = float(sum(int((np.char.lower(g.name.astype(str)) == c.lower()).sum()) for g in gts))
        if self.bootstrap:
            self.bootstrap_values = bootstrap_map(gts, dts, classes, self.bootstrap)
            ap["mAP_ci_low"], ap["mAP_ci_high"] = interval(self.bootstrap_values)
        return ap

    def _info_of(self, res: dict, by_file: dict, by_idx: dict) -> dict:
        """The info a result belongs to: by point-cloud file name, else (no ``lidar_path``) by sample_idx."""
        name = res.get("lidar_file")
        if name:
            if name not in by_file:
                raise KeyError(f"prediction for point cloud {name!r} has no entry in {self.ann_file}")
            return by_file[name]
        if res["sample_idx"] not in by_idx:
            raise KeyError(f"prediction for sample_idx {res['sample_idx']!r} has no entry in {self.ann_file}")
        return by_idx[res["sample_idx"]]

    def _det_objects(self, pred: dict, info: dict, class_names) -> KittiObjects:
        box = self.convert_valid_bboxes(pred, info)
        if len(box["bbox"]) == 0:
            return KittiObjects.empty(with_score=True)
        h, w = info["images"][self.default_cam_key]["height"], info["images"][self.default_cam_key]["width"]
        bbox = np.asarray(box["bbox"], dtype=np.float64).copy()
        bbox[:, 2:] = np.minimum(bbox[:, 2:], [w, h])
        bbox[:, :2] = np.maximum(bbox[:, :2], 0)
        cam, lidar = np.asarray(box["box3d_camera"]), np.asarray(box["box3d_lidar"])
        alpha = -np.arctan2(-lidar[:, 1], lidar[:, 0]) + cam[:, 6]
        n = len(cam)
        names = [class_names[int(label)] for label in box["label_preds"]]
        return _objects(names, np.zeros(n), np.zeros(n, int), alpha, bbox, cam[:, 3:6], cam[:, :3], cam[:, 6],
                        box["scores"])
