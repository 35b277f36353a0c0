"""The mmdet3d additions the synthetic configs import: velocity-free CenterHead, frame-id dataset, numpy shim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.mmdet3d


@pytest.fixture(scope="module")
def cp_config(tmp_path_factory):
    from dm3d_exp.data import SynthParams, ensure_dataset
    from dm3d_exp.training import load_config, resolve_detector

    root = ensure_dataset(SynthParams(num_train=2, num_val=3, seed=4), root=tmp_path_factory.mktemp("m") / "ds",
                          workers=1)
    return load_config(resolve_detector("centerpoint_voxel_synth", require_checkpoint=False).config, root)


def _head(cfg):
    from dm3d_exp.adapters.runtime import setup_mmdet3d

    setup_mmdet3d()
    from mmdet3d.registry import MODELS

    head_cfg = dict(cfg.model.pts_bbox_head, train_cfg=cfg.model.train_cfg.pts, test_cfg=cfg.model.test_cfg.pts)
    head = MODELS.build(head_cfg)
    head.init_weights()
    return head


def test_numpy_long_alias(cp_config):
    assert np.long is np.int64


def test_center_head_no_velocity_init_and_loss_on_kitti_boxes(cp_config):
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    torch.manual_seed(0)
    head = _head(cp_config)
    for task_head in head.task_heads:  # mmengine does not reach these through nn.ModuleList by itself
        assert torch.allclose(task_head.heatmap[-1].bias, torch.full_like(task_head.heatmap[-1].bias, -2.19))
        assert float(task_head.heatmap[-1].weight.std()) < 0.02
    feats = [torch.randn(1, 128, 96, 64)]
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor([[10.0, 2.0, -1.6, 3.9, 1.6, 1.5, 0.3],
                                                      [15.0, -3.0, -1.5, 0.8, 0.6, 1.7, 1.0]]))
    gt.labels_3d = torch.tensor([2, 0])
    head.train()
    losses = head.loss_by_feat(head(feats), [gt])
    assert float(losses["task1.loss_heatmap"]) < 50  # prior init: ~8, not ~5000
    assert set(losses) == {"task0.loss_heatmap", "task0.loss_bbox", "task1.loss_heatmap", "task1.loss_bbox"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.task_heads[0].reg.parameters())
    assert len(head.train_cfg["code_weights"]) == 10 and head.train_cfg["code_weights"][8:] == [0.0, 0.0]
    with torch.no_grad():
        preds = head.predict_by_feat(head(feats), [dict(box_type_3d=LiDARInstance3DBoxes)])
    assert preds[0].bboxes_3d.tensor.shape[1] == 7


def test_frame_id_dataset_keeps_info_sample_idx(cp_config):
    from mmengine.fileio import load

    from dm3d_exp.adapters.runtime import setup_mmdet3d

    setup_mmdet3d()
    from mmdet3d.registry import DATASETS

    ds_cfg = dict(cp_config.val_dataloader.dataset)
    assert ds_cfg["type"] == "KittiFrameIdDataset"
    ds = DATASETS.build(ds_cfg)
    ids = [info["sample_idx"] for info in load(ds_cfg["data_root"] + ds_cfg["ann_file"])["data_list"]]
    assert ids == [2, 3, 4]
    assert [ds[i]["data_samples"].sample_idx for i in range(len(ds))] == ids
