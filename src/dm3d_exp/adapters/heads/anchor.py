"""Anchor3DHead (VoxelNet / PointPillars, SECOND; PV-RCNN's RPN): per feature level cls_score (conf),
bbox_pred and dir_cls_pred (loc), each [B, anchors * C, H, W]; outputs named ``<kind>.level<l>``."""
from __future__ import annotations

import torch

from .base import HeadExtractor, register_head

ANCHOR_KINDS = ("cls_score", "bbox_pred", "dir_cls_pred")


def anchor_outputs(outs) -> dict[str, torch.Tensor]:
    """(cls_scores, bbox_preds, dir_cls_preds), each per level, as ``<kind>.level<l>`` tensors."""
    result = {}
    for kind, per_level in zip(ANCHOR_KINDS, outs):
        for level, t in enumerate(per_level):
            if t is not None:
                result[f"{kind}.level{level}"] = t
    return result


def anchor_split(name: str) -> tuple[str, str]:
    kind, _, site = name.partition(".")
    return kind, site


@register_head("anchor3d")
class AnchorHead(HeadExtractor):
    head_types = ("Anchor3DHead",)
    groups = {"cls_score": "conf", "bbox_pred": "loc", "dir_cls_pred": "loc"}

    def name_outputs(self, raw):
        return anchor_outputs(raw)

    def split(self, name):
        return anchor_split(name)
