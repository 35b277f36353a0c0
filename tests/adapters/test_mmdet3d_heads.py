"""Head outputs and layer enumeration on real (tiny) mmdet3d detectors."""
import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.heads import head_extractor, head_outputs
from dm3d_exp.adapters.sensitivity import DistortionSpec
from dm3d_exp.core.distortion import detection_distortion
from dm3d_exp.adapters.layers import layer_spec, prunable_modules
from tiny_detectors import he_init, random_points, tiny_centerpoint, tiny_pointpillars, tiny_pv_rcnn, tiny_ssn

TINY = {"pointpillars": tiny_pointpillars, "centerpoint": tiny_centerpoint, "pv_rcnn": tiny_pv_rcnn, "ssn": tiny_ssn}


# spconv's multi-threaded CPU sums change order between calls; through PV-RCNN's 12 sparse layers the
# rounding would grow past the 1e-3 tolerances below
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    torch.manual_seed(0)
    det = build_detector(TINY[request.param]())
    return request.param, he_init(det) if request.param == "pv_rcnn" else det


def test_head_outputs_grouped_and_differentiable(model):
    kind, det = model
    inputs, samples = points_batch(det, [random_points(0)])
    outs = head_outputs(det, inputs, samples)
    groups = {n: head_extractor(det).group(n) for n in outs}
    assert set(groups.values()) == {"loc", "conf"}
    if kind in ("pointpillars", "ssn"):
        assert groups["cls_score.level0"] == "conf" and groups["bbox_pred.level0"] == "loc"
        # PointPillars: 3 classes x 2 rotations x 3 sizes channels; SSN: 3 class channels (anchors are positions)
        assert outs["cls_score.level0"].shape[1] == (18 if kind == "pointpillars" else 3)
    elif kind == "pv_rcnn":
        assert groups["rpn.cls_score.level0"] == "conf" and groups["rpn.dir_cls_pred.level0"] == "loc"
        assert groups["roi.bbox_scores"] == "conf" and groups["roi.bbox_reg"] == "loc"
        n_rois = sum(len(s.proposals) for s in samples)
        assert 0 < n_rois <= 16 and outs["roi.bbox_scores"].shape[0] == n_rois
        assert outs["roi.bbox_reg"].shape == (n_rois, 7)
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
    expected = {"linear", "conv", "conv_transpose"} if kind in ("pointpillars", "ssn") else {"subm_conv", "sparse_conv", "conv", "conv_transpose"}
    if kind == "pv_rcnn":  # VSA / RoI-grid MLPs (1x1 Conv2d) and the RoI head's fully connected layers
        expected |= {"linear"}
    assert expected <= kinds


def test_head_outputs_deterministic(model):
    _, det = model
    inputs, samples = points_batch(det, [random_points(1)])
    with torch.no_grad():
        a = head_outputs(det, inputs, samples)
        b = head_outputs(det, inputs, samples)
    # spconv's CPU gather/scatter may reorder float32 sums between calls: equal up to rounding
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-3 * float(a[k].abs().max())) for k in a)


def test_pv_rcnn_roi_outputs_refine_the_dense_proposals():
    """Perturbed weights change the RoI head's outputs but not the RoIs they refine (METHOD.md §2)."""
    torch.manual_seed(0)
    det = he_init(build_detector(tiny_pv_rcnn()))
    inputs, samples = points_batch(det, [random_points(2)])
    with torch.no_grad():
        dense = head_outputs(det, inputs, samples)
        rois = samples[0].proposals.bboxes_3d.tensor.clone()
        conv = det.rpn_head.conv_cls
        saved = conv.weight.clone()
        conv.weight.add_(0.5)
        try:
            perturbed = head_outputs(det, inputs, samples)
        finally:
            conv.weight.copy_(saved)
        fresh_samples = points_batch(det, [random_points(2)])[1]
        conv.weight.add_(0.5)
        try:
            head_outputs(det, inputs, fresh_samples)  # no stored proposals: the perturbed RPN proposes
        finally:
            conv.weight.copy_(saved)
    assert torch.equal(samples[0].proposals.bboxes_3d.tensor, rois)
    # only the RPN was perturbed: on the stored RoIs, the RoI head sees the same features and answers alike
    for key in ("roi.bbox_scores", "roi.bbox_reg"):
        assert torch.allclose(perturbed[key], dense[key], rtol=1e-3, atol=1e-3 * float(dense[key].abs().max()))
    assert not torch.allclose(perturbed["rpn.cls_score.level0"], dense["rpn.cls_score.level0"])
    assert not torch.equal(fresh_samples[0].proposals.bboxes_3d.tensor, rois)


SITES = {  # expected conf source of a few outputs per head family
    "pointpillars": {"bbox_pred.level0": "cls_score.level0", "dir_cls_pred.level0": "cls_score.level0"},
    "centerpoint": {"task0.reg": "task0.heatmap", "task1.rot": "task1.heatmap", "task1.heatmap": "task1.heatmap"},
    "pv_rcnn": {"rpn.bbox_pred.level0": "rpn.cls_score.level0", "roi.bbox_reg": "roi.bbox_scores"},
    "ssn": {"bbox_pred.level0": "cls_score.level0", "dir_cls_pred.level0": "cls_score.level0"},
}


def test_foreground_weighting_and_channel_normalisation_work_on_every_head(model):
    """Every output gets foreground weights from the class scores at its own positions (CenterHead task,
    anchor level, RoI), and D with both extensions is 0 for the dense model and > 0 when perturbed."""
    kind, det = model
    inputs, samples = points_batch(det, [random_points(0)])
    with torch.no_grad():
        dense = head_outputs(det, inputs, samples)
    head = head_extractor(det)
    sources = head.confidence_sources(dense)
    assert set(sources) == set(dense)
    assert {k: sources[k] for k in SITES[kind]} == SITES[kind]
    terms = DistortionSpec(foreground_weighting=True, normalize="channel_variance").terms(dense, head)
    for name, w in terms["fg_weights"].items():
        src = dense[sources[name]]
        assert torch.equal(w, src.sigmoid().amax(dim=1, keepdim=True))
        assert torch.broadcast_shapes(w.shape, dense[name].shape) == dense[name].shape
    assert float(detection_distortion(dense, dense, **terms)) == 0.0
    noisy = {k: v + 0.1 * torch.randn_like(v) for k, v in dense.items()}
    assert float(detection_distortion(dense, noisy, **terms)) > 0.0


def test_confidence_sources_need_one_conf_output_per_site():
    from dm3d_exp.adapters.heads.center import CenterHeadExtractor

    with pytest.raises(ValueError, match="site 'task0'.*expected exactly one conf"):
        CenterHeadExtractor("pts_bbox_head").confidence_sources(["task0.reg", "task0.dim"])


def test_head_extractors_are_registered_by_name_and_head_class():
    """The registry (heads/base.py): every shipped family by name, one extractor per head class, a head
    nobody registered refused with what is registered, a second extractor for a taken class refused."""
    from torch import nn

    from dm3d_exp.adapters.heads import HEADS, HeadExtractor, register_head

    assert {"anchor3d", "center", "pv_rcnn", "shape_aware"} <= set(HEADS.names())

    class TransFusionHead(nn.Module):  # a head family nobody registered
        pass

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.pts_bbox_head = TransFusionHead()

    with pytest.raises(TypeError, match=r"Detector has no registered head among its heads \{'pts_bbox_head': "
                                        r"'TransFusionHead'\}; registered head extractors: anchor3d \(Anchor3DHead\)"):
        head_extractor(Detector())
    with pytest.raises(ValueError, match=r"head classes \['CenterHead'\] are already read by \['center'\]"):
        register_head("center_again")(type("Again", (HeadExtractor,), {"head_types": ("CenterHead",)}))
    with pytest.raises(ValueError, match="'center' is already registered"):
        register_head("center")(type("Again", (HeadExtractor,), {"head_types": ("NoSuchHead",)}))
    assert "center_again" not in HEADS
