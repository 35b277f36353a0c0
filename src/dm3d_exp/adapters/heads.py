"""Pre-NMS dense head outputs of mmdet3d detectors, named and grouped into `loc` / `conf` (METHOD.md §2).

One extractor per head family, chosen by what the model has:
- single-stage voxel detectors (VoxelNet / PointPillars, SECOND): ``extract_feat`` + ``bbox_head`` —
  Anchor3DHead gives per level cls_score (conf), bbox_pred and dir_cls_pred (loc);
- CenterPoint (MVXTwoStageDetector, whose mode='tensor' is a stub in mmdet3d 1.4): ``extract_feat`` +
  ``pts_bbox_head`` — CenterHead gives per task heatmap (conf) and reg/height/dim/rot/vel (loc).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

# Output-name -> group tables (METHOD.md §2).
ANCHOR_HEAD_GROUPS = {"cls_score": "conf", "bbox_pred": "loc", "dir_cls_pred": "loc"}
CENTER_HEAD_GROUPS = {"heatmap": "conf", "hm": "conf", "reg": "loc", "center": "loc", "height": "loc",
                      "center_z": "loc", "dim": "loc", "rot": "loc", "vel": "loc"}


def _anchor_outputs(outs) -> dict[str, torch.Tensor]:
    names = ("cls_score", "bbox_pred", "dir_cls_pred")
    result = {}
    for name, per_level in zip(names, outs):
        for level, t in enumerate(per_level):
            if t is not None:
                result[f"{name}.level{level}"] = t
    return result


def _center_outputs(outs) -> dict[str, torch.Tensor]:
    result = {}
    for task, task_out in enumerate(outs):
        preds = task_out[0] if isinstance(task_out, (list, tuple)) else task_out
        for key, t in preds.items():
            result[f"task{task}.{key}"] = t
    return result


def output_group(name: str) -> str:
    """'loc' or 'conf' for an output name produced by ``head_outputs``."""
    base = name.split(".")[-1] if name.startswith("task") else name.split(".")[0]
    table = CENTER_HEAD_GROUPS if name.startswith("task") else ANCHOR_HEAD_GROUPS
    if base not in table:
        raise KeyError(f"head output {name!r} has no loc/conf group; known: {sorted(table)}")
    return table[base]


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, Mapping):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def head_outputs(model: nn.Module, inputs: Mapping, data_samples=None) -> dict[str, torch.Tensor]:
    """Dense pre-NMS head outputs of ``model`` for preprocessed ``inputs`` (``data_preprocessor`` output).

    ``inputs`` are cloned first: mmdet3d's PillarFeatureNet (legacy mode, the default) writes into the
    voxel tensor it is given, so a second forward on the same batch would see corrupted points.
    """
    inputs = _clone(inputs)
    if hasattr(model, "pts_bbox_head") and model.pts_bbox_head is not None:
        metas = [s.metainfo for s in data_samples] if data_samples is not None else None
        _, pts_feats = model.extract_feat(inputs, metas)
        return _center_outputs(model.pts_bbox_head(pts_feats))
    if hasattr(model, "bbox_head"):
        feats = model.extract_feat(inputs)
        return _anchor_outputs(model.bbox_head(feats))
    raise TypeError(f"no head-output extractor for {type(model).__name__}: expected a bbox_head "
                    f"(VoxelNet-style) or pts_bbox_head (CenterPoint-style)")
