"""Fisher curves vs measured distortion on a real (tiny) mmdet3d PointPillars."""
import numpy as np
import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.layers import prunable_modules
from dm3d_exp.adapters.sensitivity import (DistortionMeter, DistortionSpec, FisherSpec, additivity_check, fisher_curves,
                                           intra_layer_orders, measured_layer_curves)
from tiny_detectors import random_points, tiny_pointpillars


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    det = build_detector(tiny_pointpillars())
    batches = [points_batch(det, [random_points(s)]) for s in range(2)]
    layers = dict(prunable_modules(det))
    return det, batches, layers


@pytest.mark.parametrize("distortion", [DistortionSpec(), DistortionSpec(foreground_weighting=True, normalize="channel_variance")],
                         ids=["paper", "fg+channel_variance"])
def test_fisher_matches_measured_on_layers_linear_in_their_weights(setup, distortion):
    """Head convs are linear in their own weights, so D(dW) = dW^T G dW exactly: the unbiased Fisher
    estimate must agree with measured D up to Monte-Carlo error (R probes: rel. sd ~ sqrt(2/(N R))),
    for the paper's D and for the extended one (per-element weights a_k from the dense outputs)."""
    det, batches, layers = setup
    heads = {n: m for n, m in layers.items() if n.startswith("bbox_head.conv_")}
    assert set(heads) == {"bbox_head.conv_cls", "bbox_head.conv_reg", "bbox_head.conv_dir_cls"}
    spec = FisherSpec(num_levels=5, probes_per_frame=100, damping=0.0, distortion=distortion)
    orders = intra_layer_orders(det, heads, batches, spec)
    fisher = fisher_curves(det, heads, batches, spec, orders)
    measured = measured_layer_curves(det, heads, batches, spec, orders)
    for name in heads:
        f, m = fisher[name], measured[name]
        assert f[0] == 0 and m[0] == 0 and np.all(np.diff(f) >= 0)
        assert m[-1] > 0
        np.testing.assert_allclose(f[1:], m[1:], rtol=0.35)


def test_fisher_tracks_measured_on_nonlinear_layers_and_ranks_them(setup):
    """Second-order accuracy: at low sparsity the estimate of a deep layer is within a factor 2 of the
    measured distortion, and the layer ordering by sensitivity agrees between the two."""
    det, batches, layers = setup
    deep = {n: layers[n] for n in ("backbone.blocks.0.0", "backbone.blocks.2.0", "neck.deblocks.1.0")}
    spec = FisherSpec(num_levels=20, probes_per_frame=60, damping=0.0)
    orders = intra_layer_orders(det, deep, batches, spec)
    fisher = fisher_curves(det, deep, batches, spec, orders)
    measured = measured_layer_curves(det, deep, batches, spec, orders)
    for name in deep:
        assert 0.5 < fisher[name][1] / measured[name][1] < 2.0, name


def test_taylor_ranking_differs_from_magnitude_and_is_permutation(setup):
    det, batches, layers = setup
    sub = {"bbox_head.conv_reg": layers["bbox_head.conv_reg"]}
    mag = intra_layer_orders(det, sub, batches, FisherSpec(ranking="magnitude"))["bbox_head.conv_reg"]
    tay = intra_layer_orders(det, sub, batches, FisherSpec(ranking="taylor"))["bbox_head.conv_reg"]
    n = layers["bbox_head.conv_reg"].weight.numel()
    assert sorted(tay.tolist()) == list(range(n)) and not torch.equal(mag, tay)


def test_additivity_diagnostic_and_meter_zero_when_dense(setup):
    det, batches, layers = setup
    meter = DistortionMeter(det, batches, FisherSpec().distortion)
    assert meter() == 0.0
    sub = {n: layers[n] for n in ("backbone.blocks.1.0", "bbox_head.conv_cls")}
    orders = intra_layer_orders(det, sub, batches, FisherSpec())
    before = {n: m.weight.detach().clone() for n, m in sub.items()}
    rows = additivity_check(meter, sub, orders, [{n: m.weight.numel() // 10 for n, m in sub.items()}])
    assert all(torch.equal(before[n], sub[n].weight) for n in sub)  # restored
    assert rows[0]["sum_single"] > 0 and 0.3 < rows[0]["ratio"] < 3.0


def test_pv_rcnn_fisher_matches_measured_on_roi_output_layers():
    """PV-RCNN's RoI head, refining the dense model's proposals: its last box/score layers are linear in
    their weights, so the Fisher curves must match measured D within Monte-Carlo error (as above)."""
    from tiny_detectors import he_init, tiny_pv_rcnn

    torch.manual_seed(0)
    det = he_init(build_detector(tiny_pv_rcnn()))
    batches = [points_batch(det, [random_points(s)]) for s in range(2)]
    layers = dict(prunable_modules(det))
    last = {n: layers[n] for n in ("roi_head.bbox_head.cls_layer.3", "roi_head.bbox_head.reg_layer.3")}
    spec = FisherSpec(num_levels=5, probes_per_frame=100, damping=0.0)
    orders = intra_layer_orders(det, last, batches, spec)
    fisher = fisher_curves(det, last, batches, spec, orders)
    measured = measured_layer_curves(det, last, batches, spec, orders)
    for name in last:
        f, m = fisher[name], measured[name]
        assert f[0] == 0 and m[0] == 0 and np.all(np.diff(f) >= 0) and m[-1] > 0
        np.testing.assert_allclose(f[1:], m[1:], rtol=0.35)
