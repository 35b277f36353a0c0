"""Evaluation of a detector on a dataset split: the metric (KITTI format: the devkit-exact
``DevkitKittiMetric``, registered by importing :mod:`.kitti_metric`), the test loop and the headline mAP.
Only the evaluate stage imports it, so the metric code is in no other stage's code version."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import kitti_metric, nuscenes_metric  # noqa: F401  (register the Devkit* metrics with mmdet3d's METRICS)
from ..kitti.format import EVAL_CLASSES
from .data import info_path
from .runtime import setup_mmdet3d


def build_metric(cfg, data_root, fmt: str, split: str, classes: Sequence[str], bootstrap: int = 0):
    """KITTI format: the devkit-exact metric (with ``bootstrap`` frame resamples of its mAP); nuScenes without
    its tables: the devkit-function metric on the info boxes; otherwise the config's own test evaluator
    re-rooted (no bootstrap)."""
    setup_mmdet3d()
    from mmdet3d.registry import METRICS

    if fmt == "kitti":
        mcfg = dict(type="DevkitKittiMetric", ann_file=info_path(data_root, fmt, split), metric="bbox",
                    classes=[c for c in EVAL_CLASSES if c in classes], bootstrap=bootstrap)
    elif fmt == "nuscenes" and not any(Path(data_root).glob("v1.0-*")):
        warnings.warn(f"{data_root} has no nuScenes tables (v1.0-*/): scoring with the devkit's functions on the "
                      "info boxes (DevkitNuScenesMetric: mAP and TP errors, no NDS)", stacklevel=2)
        mcfg = dict(type="DevkitNuScenesMetric", ann_file=info_path(data_root, fmt, split), classes=list(classes))
    else:
        mcfg = copy.deepcopy(cfg.test_evaluator)
        mcfg["ann_file"] = info_path(data_root, fmt, split)
        mcfg["data_root"] = str(data_root)
    return METRICS.build(mcfg)


def headline_map(metrics: dict) -> float:
    """The dataset's headline mAP from a metric dict (key ``mAP`` or ending in ``/mAP``)."""
    for k, v in metrics.items():
        if k == "mAP" or k.endswith("/mAP"):
            return float(v)
    raise KeyError(f"no mAP in metric keys {sorted(metrics)[:8]}...")


def cap_detections(sample, max_detections: int | None) -> bool:
    """Keep a predicted sample's ``max_detections`` highest-scoring 3D detections; True if it had more."""
    inst = sample.pred_instances_3d
    if max_detections is None or len(inst) <= max_detections:
        return False
    keep = torch.topk(inst.scores_3d, max_detections).indices.sort().values
    sample.pred_instances_3d = inst[keep]
    return True


@torch.no_grad()
def evaluate_detector(model: nn.Module, dataset, indices: Sequence[int], metric, batch_size: int = 1,
                      progress: Callable[[int], None] | None = None,
                      max_detections: int | None = None) -> tuple[dict[str, float], int]:
    """Run ``model.test_step`` on the frames and score them with ``metric`` (mmengine BaseMetric), each
    frame's detections capped to its ``max_detections`` best by score (the detectors' own test_cfg caps
    come first; this bounds the metric's cost for a damaged model). Returns (metrics, capped frames)."""
    from mmengine.dataset import pseudo_collate

    model.eval()
    metric.dataset_meta = dataset.metainfo
    capped = 0
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start:start + batch_size]]
        batch = pseudo_collate(items)
        outputs = model.test_step(batch)
        capped += sum(cap_detections(o, max_detections) for o in outputs)
        metric.process(batch, [o.to_dict() for o in outputs])
        if progress:
            progress(len(items))
    return metric.evaluate(len(indices)), capped
