"""ShapeAwareHead (SSN, heads/shape_aware.py) on a tiny mmdet3d SSN: outputs, curves and detections."""
import numpy as np
import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.heads import detector_features, head_extractor, head_outputs
from dm3d_exp.adapters.layers import prunable_modules
from dm3d_exp.adapters.sensitivity import FisherSpec, fisher_curves, intra_layer_orders
from tiny_detectors import random_points, tiny_ssn

pytestmark = pytest.mark.usefixtures("one_torch_thread")
IN_RANGE = (-6.0, -6.0, -2.5, 6.0, 6.0, 0.5)


@pytest.fixture(scope="module")
def ssn():
    torch.manual_seed(0)
    det = build_detector(tiny_ssn())
    return det, [points_batch(det, [random_points(s, rng_box=IN_RANGE)]) for s in range(3)]


def test_outputs_are_mmdet3ds_shape_groups_with_anchors_as_positions(ssn):
    det, batches = ssn
    head = head_extractor(det)
    assert head.name == "shape_aware" and head.attr == "pts_bbox_head"
    inputs, samples = batches[0]
    with torch.no_grad():
        outs = head_outputs(det, inputs, samples)
        raw = det.pts_bbox_head(detector_features(det, inputs, samples))
    # the neck's 16 x 16 map (32 x 32 pillars, backbone stride 2): 16 x 16 cells x 2 rotations x 2 classes for
    # the stride-1 group + 8 x 8 x 2 x 1 for the stride-2 group
    anchors = 16 * 16 * 2 * 2 + 8 * 8 * 2 * 1
    assert {k: tuple(v.shape) for k, v in outs.items()} == {
        "cls_score.level0": (1, 3, anchors), "bbox_pred.level0": (1, 9, anchors), "dir_cls_pred.level0": (1, 2, anchors)}
    for t, name in zip(raw, ("cls_score", "bbox_pred", "dir_cls_pred")):  # the same numbers, channels first
        assert torch.equal(outs[f"{name}.level0"], t[0].transpose(1, 2))
    assert {n: head.group(n) for n in outs} == {"cls_score.level0": "conf", "bbox_pred.level0": "loc",
                                               "dir_cls_pred.level0": "loc"}


def test_fisher_curves_and_detections_run_through_the_shape_aware_head(ssn):
    det, batches = ssn
    layers = dict(prunable_modules(det))
    head_layers = [n for n in layers if n.startswith("pts_bbox_head.heads")]
    assert len(head_layers) >= 6  # each shape group's shared convs and cls / reg / dir convs are prunable
    spec = FisherSpec(num_levels=8)
    orders = intra_layer_orders(det, layers, batches, spec)
    curves = fisher_curves(det, layers, batches, spec, orders)
    for name in head_layers:
        c = np.asarray(curves[name])
        assert c.shape == (9,) and c[0] == 0 and np.all(np.diff(c) >= 0) and c[-1] > 0, name
    det.eval()
    with torch.no_grad():
        (result,) = det.predict(*batches[0])
    boxes = result.pred_instances_3d
    assert 0 < len(boxes.scores_3d) <= 50 and boxes.bboxes_3d.tensor.shape[1] == 9
