"""The evaluation loop's per-frame detection cap (eval.max_detections)."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.mmdet3d


def _sample(scores):
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData

    n = len(scores)
    boxes = LiDARInstance3DBoxes(torch.arange(n * 7, dtype=torch.float32).reshape(n, 7))
    sample = Det3DDataSample()
    sample.pred_instances_3d = InstanceData(bboxes_3d=boxes, scores_3d=torch.tensor(scores),
                                            labels_3d=torch.arange(n) % 3)
    return sample


def test_cap_keeps_the_best_scores_in_their_original_order():
    from dm3d_exp.adapters.evaluation import cap_detections

    sample = _sample([0.2, 0.9, 0.1, 0.5, 0.7])
    assert cap_detections(sample, 3)
    kept = sample.pred_instances_3d
    assert kept.scores_3d.tolist() == pytest.approx([0.9, 0.5, 0.7])
    assert kept.bboxes_3d.tensor[:, 0].tolist() == [7.0, 21.0, 28.0]  # rows 1, 3, 4 with their boxes
    assert kept.labels_3d.tolist() == [1, 0, 1]
    assert not cap_detections(sample, 3) and not cap_detections(sample, None)
    assert len(sample.pred_instances_3d) == 3


class _Model(torch.nn.Module):
    """Fake detector (narrow unit test): frame i predicts 2 * i boxes."""

    def test_step(self, batch):
        return [_sample(torch.linspace(0.9, 0.1, 2 * int(i)).tolist()) for i in batch["inputs"]["frame"]]


class _Recorder:
    """Fake metric recording how many detections each frame passes to it."""

    dataset_meta = None

    def __init__(self):
        self.counts = []

    def process(self, batch, outputs):
        self.counts += [len(o["pred_instances_3d"]["scores_3d"]) for o in outputs]

    def evaluate(self, n):
        return {"frames": float(n)}


class _Dataset:
    metainfo = {}

    def __getitem__(self, i):
        return {"inputs": {"frame": i}}


def test_evaluation_caps_each_frame_and_counts_the_capped_frames():
    from dm3d_exp.adapters.evaluation import evaluate_detector

    metric = _Recorder()
    metrics, capped = evaluate_detector(_Model(), _Dataset(), [0, 1, 2, 3, 4], metric, batch_size=2, max_detections=5)
    assert metric.counts == [0, 2, 4, 5, 5] and capped == 2 and metrics == {"frames": 5.0}
    metric = _Recorder()
    _, capped = evaluate_detector(_Model(), _Dataset(), [3, 4], metric, max_detections=None)
    assert metric.counts == [6, 8] and capped == 0
