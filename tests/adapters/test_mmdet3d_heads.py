"""Head outputs and layer enumeration on real (tiny) mmdet3d detectors."""
import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.heads import head_outputs, output_group
from dm3d_exp.adapters.layers import layer_spec, prunable_modules
from tiny_detectors import random_points, tiny_centerpoint, tiny_pointpillars


@pytest.fixture(scope="module", params=["pointpillars", "centerpoint"])
def model(request):
    torch.manual_seed(0)
    cfg = tiny_pointpillars() if request.param == "pointpillars" else tiny_centerpoint()
    return request.param, build_detector(cfg)


def test_head_outputs_grouped_and_differentiable(model):
    kind, det = model
    inputs, samples = points_batch(det, [random_points(0)])
    outs = head_outputs(det, inputs, samples)
    groups = {n: output_group(n) for n in outs}
    assert set(groups.values()) == {"loc", "conf"}
    if kind == "pointpillars":
        assert groups["cls_score.level0"] == "conf" and groups["bbox_pred.level0"] == "loc"
        assert outs["cls_score.level0"].shape[1] == 18  # 3 classes x 2 rotations x 3 sizes
    else:
        assert groups["task0.heatmap"] == "conf" and groups["task1.heatmap"] == "conf"
        assert groups["task0.reg"] == "loc" and outs["task1.heatmap"].shape[1] == 2
    loss = sum(o.square().mean() for o in outs.values())
    loss.backward()
    grads = [m.weight.grad for _, m in prunable_modules(det)]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    det.zero_grad()


def test_prunable_layers_cover_sparse_and_dense_types(model):
    kind, det = model
    kinds = {layer_spec(m).kind for _, m in prunable_modules(det)}
    expected = {"linear", "conv", "conv_transpose"} if kind == "pointpillars" else {"subm_conv", "sparse_conv", "conv", "conv_transpose"}
    assert expected <= kinds


def test_head_outputs_deterministic(model):
    _, det = model
    inputs, samples = points_batch(det, [random_points(1)])
    with torch.no_grad():
        a = head_outputs(det, inputs, samples)
        b = head_outputs(det, inputs, samples)
    # spconv's CPU gather/scatter may reorder float32 sums between calls: equal up to rounding
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-3 * float(a[k].abs().max())) for k in a)
