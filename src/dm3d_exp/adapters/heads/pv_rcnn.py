"""PV-RCNN (PointVoxelRCNN): the first stage's Anchor3DHead outputs (``rpn.<kind>.level<l>``) plus the RoI
head's box scores (conf) and box refinements (loc) (``roi.bbox_scores`` / ``roi.bbox_reg``, [n_rois, C]) on
the *dense* model's proposals. The proposals are computed once per batch, on the first call, and stored on
its data samples (``sample.proposals``, the attribute mmdet3d's two-stage detectors read): later calls with
perturbed weights refine the same RoIs, so the RoI outputs stay comparable element by element (METHOD §2).
"""
from __future__ import annotations

import torch

from .anchor import AnchorHead, anchor_outputs, anchor_split
from .base import HeadExtractor, register_head

ROI_GROUPS = {"bbox_scores": "conf", "bbox_reg": "loc"}


@register_head("pv_rcnn")
class PVRCNNHead(HeadExtractor):
    head_types = ("PVRCNNRoiHead",)
    groups = {**AnchorHead.groups, **ROI_GROUPS}
    uses = ("rpn_head",)
    frozen = "proposals"

    def outputs(self, model, inputs, data_samples):
        from mmdet3d.structures import bbox3d2roi

        if data_samples is None:
            raise ValueError("PV-RCNN head outputs need the batch's data samples (they carry the proposals)")
        feats = model.extract_feat(inputs)
        rpn_outs = model.rpn_head(feats["neck_feats"])
        proposals = self._dense_proposals(model, rpn_outs, data_samples)
        points = model.extract_points_feat(inputs, feats, proposals)
        roi = getattr(model, self.attr)
        seg = roi.semantic_head(points["keypoint_features"])["seg_preds"]
        gated = points["fusion_keypoint_features"] * seg.sigmoid().max(dim=-1, keepdim=True).values
        rois = bbox3d2roi([p.bboxes_3d.tensor for p in proposals])
        refined = roi._bbox_forward(gated, points["keypoints"], rois)
        result = {f"rpn.{k}": v for k, v in anchor_outputs(rpn_outs).items()}
        result.update({f"roi.{k}": refined[k] for k in ROI_GROUPS})
        return result

    def _dense_proposals(self, model, rpn_outs, data_samples) -> list:
        """The samples' stored proposals; on the first call, the current model's RPN proposals, stored."""
        if all(hasattr(s, self.frozen) for s in data_samples):
            return [getattr(s, self.frozen) for s in data_samples]
        metas = [s.metainfo for s in data_samples]
        with torch.no_grad():
            detached = [[t.detach() for t in level] for level in rpn_outs]
            proposals = model.rpn_head.predict_by_feat(*detached, cfg=model.rpn_head.test_cfg, batch_input_metas=metas)
        for sample, prop in zip(data_samples, proposals):
            setattr(sample, self.frozen, prop)
        return proposals

    def split(self, name):
        stage, _, rest = name.partition(".")
        if stage == "roi":
            return rest, "roi"
        kind, site = anchor_split(rest)
        return kind, f"rpn.{site}"
