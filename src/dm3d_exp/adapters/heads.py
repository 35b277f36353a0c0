"""Pre-NMS dense head outputs of mmdet3d detectors, named and grouped into `loc` / `conf` (METHOD.md §2).

One extractor per head family, chosen by what the model has:
- single-stage voxel detectors (VoxelNet / PointPillars, SECOND): ``extract_feat`` + ``bbox_head`` —
  Anchor3DHead gives per level cls_score (conf), bbox_pred and dir_cls_pred (loc);
- CenterPoint (MVXTwoStageDetector, whose mode='tensor' is a stub in mmdet3d 1.4): ``extract_feat`` +
  ``pts_bbox_head`` — CenterHead gives per task heatmap (conf) and reg/height/dim/rot/vel (loc);
- PV-RCNN (PointVoxelRCNN): the first stage's Anchor3DHead outputs (``rpn.*``) plus the RoI head's box
  scores (conf) and box refinements (loc) (``roi.*``) on the *dense* model's proposals. The proposals are
  computed once per batch, on the first call, and stored on its data samples (``sample.proposals``, the
  attribute mmdet3d's two-stage detectors read): later calls with perturbed weights refine the same
  RoIs, so the RoI outputs stay comparable element by element (METHOD.md §2).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

# Output-name -> group tables (METHOD.md §2).
ANCHOR_HEAD_GROUPS = {"cls_score": "conf", "bbox_pred": "loc", "dir_cls_pred": "loc"}
ROI_HEAD_GROUPS = {"bbox_scores": "conf", "bbox_reg": "loc"}
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


def _pv_rcnn_outputs(model: nn.Module, inputs: Mapping, data_samples) -> dict[str, torch.Tensor]:
    from mmdet3d.structures import bbox3d2roi

    if data_samples is None:
        raise ValueError("PV-RCNN head outputs need the batch's data samples (they carry the proposals)")
    feats = model.extract_feat(inputs)
    rpn_outs = model.rpn_head(feats["neck_feats"])
    proposals = _dense_proposals(model, rpn_outs, data_samples)
    points = model.extract_points_feat(inputs, feats, proposals)
    roi = model.roi_head
    seg = roi.semantic_head(points["keypoint_features"])["seg_preds"]
    gated = points["fusion_keypoint_features"] * seg.sigmoid().max(dim=-1, keepdim=True).values
    rois = bbox3d2roi([p.bboxes_3d.tensor for p in proposals])
    refined = roi._bbox_forward(gated, points["keypoints"], rois)
    result = {f"rpn.{k}": v for k, v in _anchor_outputs(rpn_outs).items()}
    result.update({f"roi.{k}": refined[k] for k in ROI_HEAD_GROUPS})
    return result


def _dense_proposals(model: nn.Module, rpn_outs, data_samples) -> list:
    """The samples' stored proposals; on the first call, the current model's RPN proposals, stored."""
    if all(hasattr(s, "proposals") for s in data_samples):
        return [s.proposals for s in data_samples]
    metas = [s.metainfo for s in data_samples]
    with torch.no_grad():
        detached = [[t.detach() for t in level] for level in rpn_outs]
        proposals = model.rpn_head.predict_by_feat(*detached, cfg=model.rpn_head.test_cfg, batch_input_metas=metas)
    for sample, prop in zip(data_samples, proposals):
        sample.proposals = prop
    return proposals


def _base_and_table(name: str) -> tuple[str, dict[str, str]]:
    if name.startswith("task"):
        return name.split(".")[-1], CENTER_HEAD_GROUPS
    if name.startswith("roi."):
        return name.split(".")[1], ROI_HEAD_GROUPS
    return name.removeprefix("rpn.").split(".")[0], ANCHOR_HEAD_GROUPS


def output_group(name: str) -> str:
    """'loc' or 'conf' for an output name produced by ``head_outputs``."""
    base, table = _base_and_table(name)
    if base not in table:
        raise KeyError(f"head output {name!r} has no loc/conf group; known: {sorted(table)}")
    return table[base]


def confidence_sources(names) -> dict[str, str]:
    """For every output name, the conf output predicted at the same positions (same CenterHead task, same
    anchor-head level, the RoI head's scores): the source of its foreground weights (METHOD §2 extension)."""
    sites: dict[str, list[str]] = {}
    for name in names:
        base, _ = _base_and_table(name)
        sites.setdefault(name.replace(base, "*", 1), []).append(name)
    sources = {}
    for site, members in sites.items():
        conf = [n for n in members if output_group(n) == "conf"]
        if len(conf) != 1:
            raise ValueError(f"head outputs at {site!r} ({sorted(members)}): expected exactly one conf output")
        sources.update({n: conf[0] for n in members})
    return sources


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
    For PV-RCNN the first call stores the dense proposals on ``data_samples`` (module docstring).
    """
    inputs = _clone(inputs)
    if getattr(model, "roi_head", None) is not None and getattr(model, "points_encoder", None) is not None:
        return _pv_rcnn_outputs(model, inputs, data_samples)
    if hasattr(model, "pts_bbox_head") and model.pts_bbox_head is not None:
        metas = [s.metainfo for s in data_samples] if data_samples is not None else None
        _, pts_feats = model.extract_feat(inputs, metas)
        return _center_outputs(model.pts_bbox_head(pts_feats))
    if hasattr(model, "bbox_head"):
        feats = model.extract_feat(inputs)
        return _anchor_outputs(model.bbox_head(feats))
    raise TypeError(f"no head-output extractor for {type(model).__name__}: expected a bbox_head "
                    f"(VoxelNet-style), pts_bbox_head (CenterPoint-style) or rpn_head + roi_head + "
                    f"points_encoder (PV-RCNN)")
