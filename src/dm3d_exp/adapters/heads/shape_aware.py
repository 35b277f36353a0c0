"""ShapeAwareHead (SSN): one small head per shape group, their anchors concatenated; mmdet3d returns
cls_score [B, anchors, classes], bbox_pred [B, anchors, code] and dir_cls_preds [B, anchors, 2] per level.
They are transposed to channels-at-dim-1 ([B, C, anchors], the layout D's channel normalisation and the
foreground weights expect: every anchor is a position) and named like Anchor3DHead's, ``<kind>.level<l>``.
"""
from __future__ import annotations

from .anchor import AnchorHead, anchor_outputs, anchor_split
from .base import HeadExtractor, register_head


@register_head("shape_aware")
class ShapeAwareHeadExtractor(HeadExtractor):
    head_types = ("ShapeAwareHead",)
    groups = AnchorHead.groups

    def name_outputs(self, raw):
        return {name: t.transpose(1, 2) for name, t in anchor_outputs(raw).items()}

    def split(self, name):
        return anchor_split(name)
