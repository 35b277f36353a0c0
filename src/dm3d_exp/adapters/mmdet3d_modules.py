"""mmdet3d additions registered by ``setup_mmdet3d`` (and the synthetic configs' ``custom_imports``).

- numpy >= 1.24 removed ``np.long``, which mmdet3d 1.4.0's ``DataBaseSampler.sample_all`` (ObjectSample
  augmentation) still uses: the alias is restored as ``np.int64`` (what ``np.long`` was on Linux).
- ``CenterHeadNoVelocity``: mmdet3d 1.4.0's ``CenterHead`` trains only on 9-value boxes with velocity
  (nuScenes): ``get_targets_single`` unpacks ``vx, vy = box[7:]`` and ``loss_by_feat`` concatenates a
  ``vel`` prediction. KITTI-format boxes have 7 values. This head pads the ground truth with zero
  velocity and its predictions with a constant zero ``vel`` map; with zero ``code_weights`` for the two
  velocity entries the loss equals a velocity-free CenterPoint loss. Prediction is unchanged (mmdet3d
  decodes 7-value boxes when there is no ``vel`` head). It also initialises its task heads: CenterHead
  keeps them in a torch ``nn.ModuleList``, where mmengine's recursive ``init_weights`` stops, so their
  Kaiming init and the heatmap prior bias (``init_bias=-2.19``) are never applied (initial heatmap
  sigmoid ~0.49 instead of 0.1; heatmap loss in the hundreds). The heatmap's last conv gets N(0, 0.01)
  weights, as in the original CenterPoint and RetinaNet-style prior heads: with SeparateHead's Kaiming
  init the logits after BatchNorm have a std of ~4 around the prior and the first heatmap loss is ~5000.
- ``KittiFrameIdDataset``: mmengine's ``BaseDataset.get_data_info`` overwrites each sample's ``sample_idx``
  with its position in the (possibly subset) data list, while ``DevkitKittiMetric`` looks ground truth up
  by the info file's ``sample_idx`` (the KITTI frame id; 800..999 for the synthetic val split). This
  dataset keeps the frame id, so predictions meet their own ground truth on any split or subset.
"""
from __future__ import annotations

import numpy as np
import torch
from mmdet3d.datasets import KittiDataset
from mmdet3d.models.dense_heads import CenterHead
from mmdet3d.registry import DATASETS, MODELS
from mmengine.structures import InstanceData

if "long" not in vars(np):  # hasattr would trigger numpy 1.2x's FutureWarning
    np.long = np.int64


@MODELS.register_module()
class CenterHeadNoVelocity(CenterHead):
    """CenterHead for datasets without velocity (``common_heads`` without ``vel``, code size 7)."""

    def init_weights(self) -> None:
        """CenterHead's init plus each task head's (Kaiming convs, heatmap prior: small weights, ``init_bias``)."""
        super().init_weights()
        for task_head in self.task_heads:
            task_head.init_weights()
            torch.nn.init.normal_(task_head.heatmap[-1].weight, std=0.01)

    def get_targets_single(self, gt_instances_3d: InstanceData):
        """Targets as CenterHead's, from boxes padded with zero velocity (the velocity entries are unused)."""
        boxes = gt_instances_3d.bboxes_3d
        if boxes.tensor.shape[1] == 7:
            padded = torch.cat([boxes.tensor, boxes.tensor.new_zeros(len(boxes), 2)], dim=1)
            gt_instances_3d = gt_instances_3d.clone()
            gt_instances_3d.bboxes_3d = type(boxes)(padded, box_dim=9, with_yaw=boxes.with_yaw)
        return super().get_targets_single(gt_instances_3d)

    def loss_by_feat(self, preds_dicts, batch_gt_instances_3d, *args, **kwargs):
        """CenterHead's loss with a zero ``vel`` prediction inserted (weighted 0 by ``code_weights``)."""
        for preds in preds_dicts:
            if "vel" not in preds[0]:
                preds[0]["vel"] = torch.zeros_like(preds[0]["reg"])
        return super().loss_by_feat(preds_dicts, batch_gt_instances_3d, *args, **kwargs)


@DATASETS.register_module()
class KittiFrameIdDataset(KittiDataset):
    """KittiDataset whose samples keep the info file's ``sample_idx`` (frame id), not their list position."""

    def parse_data_info(self, info: dict) -> dict:
        """KittiDataset's parsing, remembering the frame id."""
        out = super().parse_data_info(info)
        out["frame_id"] = info["sample_idx"]
        return out

    def get_data_info(self, idx: int) -> dict:
        """Data info of sample ``idx`` with ``sample_idx`` = its frame id."""
        info = super().get_data_info(idx)
        info["sample_idx"] = info["frame_id"]
        return info
