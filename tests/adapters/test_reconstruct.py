"""Sequential fixed-mask reconstruction and BN re-estimation on real (tiny) mmdet3d detectors."""
import copy

import pytest
import torch

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.batchnorm import batchnorm_modules, correct_statistics, reestimate_batchnorm
from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.heads import head_outputs
from dm3d_exp.adapters.layers import layer_spec, prunable_modules, weight_view
from dm3d_exp.adapters.reconstruct import ReconstructionSpec, forward_order, reconstruct_model
from dm3d_exp.adapters.sensitivity import DistortionMeter, DistortionSpec
from dm3d_exp.core.ranking import magnitude_order, mask_from_order
from dm3d_exp.core.reconstruct import ReconstructionError
from tiny_detectors import he_init, random_points, tiny_centerpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    det = he_init(build_detector(tiny_centerpoint()))
    batches = [points_batch(det, [random_points(s, n=30000)]) for s in range(6)]
    return det, batches


def _masks(model, density=0.4, max_inputs=96):
    """Magnitude masks of the layers with at most ``max_inputs`` inputs per site: the tiny model's BEV
    map is 8 x 8 (4 x 4 at stride 16), so wider layers get fewer samples than inputs on 6 frames."""
    masks = {}
    for name, m in prunable_modules(model):
        if layer_spec(m).taps * layer_spec(m).cin > max_inputs:
            continue
        view = weight_view(m).detach()
        masks[name] = mask_from_order(magnitude_order(view), tuple(view.shape), int(round((1 - density) * view.numel())))
    return masks


def _zeroed(model, masks):
    z = copy.deepcopy(model)
    with torch.no_grad():
        for name, m in prunable_modules(z):
            if name in masks:
                weight_view(m).mul_(masks[name])
    return z


@pytest.mark.parametrize("spec", [ReconstructionSpec(), ReconstructionSpec(target="dense_outputs", layers_per_pass=3),
                                  ReconstructionSpec(layers_per_pass=10_000, max_sites=300)],
                         ids=["sequential", "dense_outputs_by_3", "parallel_subsampled"])
def test_reconstruction_keeps_masks_and_lowers_output_distortion(setup, spec):
    dense, batches = setup
    masks = _masks(dense)
    model = copy.deepcopy(dense)
    layers = {n: m for n, m in prunable_modules(model) if n in masks}
    ref = copy.deepcopy(dense)
    records = reconstruct_model(model, layers, masks, batches, spec, ref, dict(prunable_modules(ref)))
    assert set(records) == set(masks)
    assert len(masks) >= 10
    for name, m in layers.items():
        assert not bool(weight_view(m).detach()[~masks[name]].any()), name
    solved = [r for r in records.values() if r["status"] == "reconstructed"]
    assert len(solved) == len(masks)
    assert all(r["error_reconstructed"] <= r["error_zeroed"] for r in solved)
    meter = DistortionMeter(dense, batches, DistortionSpec())
    assert meter(model) < 0.5 * meter(_zeroed(dense, masks))


def test_sequential_and_parallel_differ_only_after_the_first_layer(setup):
    """The first layer sees the same (raw) inputs in both variants; a later layer sees pruned inputs
    only in the sequential one."""
    dense, batches = setup
    masks = _masks(dense)
    out = {}
    for per_pass in (1, 10_000):
        model = copy.deepcopy(dense)
        layers = {n: m for n, m in prunable_modules(model) if n in masks}
        reconstruct_model(model, layers, masks, batches, ReconstructionSpec(layers_per_pass=per_pass))
        out[per_pass] = {n: weight_view(m).detach().clone() for n, m in layers.items()}
    order = forward_order(dense, {n: m for n, m in prunable_modules(dense) if n in masks}, batches)
    torch.testing.assert_close(out[1][order[0]], out[10_000][order[0]])
    assert not torch.allclose(out[1][order[-1]], out[10_000][order[-1]])


def test_fully_pruned_and_unused_layers_are_recorded_not_nan(setup):
    dense, batches = setup
    masks = _masks(dense)
    first = forward_order(dense, {n: m for n, m in prunable_modules(dense) if n in masks}, batches)[0]
    masks[first] = torch.zeros_like(masks[first])
    model = copy.deepcopy(dense)
    layers = {n: m for n, m in prunable_modules(model) if n in masks}
    extra = torch.nn.Conv2d(2, 2, 1)  # a prunable layer the forward never reaches
    layers["unused"] = extra
    masks["unused"] = torch.tensor([[True, False], [False, True]]).reshape(weight_view(extra).shape)
    second = [n for n in masks if n not in (first, "unused")][0]
    masks[second] = torch.ones_like(masks[second])  # nothing pruned: the dense weights stay as they are
    kept = weight_view(layers[second]).detach().clone()
    records = reconstruct_model(model, layers, masks, batches, ReconstructionSpec(layers_per_pass=10_000))
    assert records[first]["status"] == "fully_pruned" and not bool(weight_view(layers[first]).any())
    assert records["unused"]["status"] == "no_calibration_input" and records["unused"]["samples"] == 0
    assert records[second]["status"] == "unpruned_kept_dense" and torch.equal(weight_view(layers[second]), kept)
    assert all(torch.isfinite(m.weight).all() for m in layers.values())


def test_too_few_samples_for_a_layers_rank_is_an_error(setup):
    dense, batches = setup
    model = copy.deepcopy(dense)
    layers = dict(prunable_modules(model))
    widest = max(layers, key=lambda n: layer_spec(layers[n]).taps * layer_spec(layers[n]).cin)
    with pytest.raises(ReconstructionError, match=f"layer {widest}: .* calibration samples for"):
        reconstruct_model(model, {widest: layers[widest]}, {widest: _masks(dense, max_inputs=10**9)[widest]}, batches[:1],
                          ReconstructionSpec(max_sites=8))


def test_bn_reestimation_reproduces_statistics_of_the_frames(setup):
    """Re-estimating on a fixed set of batches gives each BN the exact mean of its inputs over them
    (cumulative average), the same twice, and leaves the model in eval mode."""
    dense, batches = setup
    model = copy.deepcopy(dense)
    bns = batchnorm_modules(model)
    assert bns
    first = next(iter(bns.values()))
    seen_inputs = []
    handle = first.register_forward_hook(lambda m, i, o: seen_inputs.append(i[0].detach()))
    assert reestimate_batchnorm(model, batches) == len(batches)
    handle.remove()
    dims = [0] + list(range(2, seen_inputs[0].ndim))
    expected = torch.stack([x.mean(dim=dims) for x in seen_inputs]).mean(0)
    torch.testing.assert_close(first.running_mean, expected, rtol=1e-4, atol=1e-5)
    again = copy.deepcopy(dense)
    reestimate_batchnorm(again, batches)
    for (n, a), b in zip(bns.items(), batchnorm_modules(again).values()):
        assert torch.equal(a.running_var, b.running_var), n
        assert a.momentum == b.momentum and not a.training
    assert not model.training


def _bn_output_moments(model, batches):
    """Per BN: per-channel mean and variance of its output over ``batches`` (float64)."""
    acc = {}

    def hook(name):
        def fwd(mod, inputs, out):
            flat = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()
            s = acc.setdefault(name, [0, 0.0, 0.0])
            s[0] += flat.shape[1]
            s[1] = s[1] + flat.sum(1)
            s[2] = s[2] + (flat * flat).sum(1)
        return fwd

    handles = [m.register_forward_hook(hook(n)) for n, m in batchnorm_modules(model).items()]
    with torch.no_grad():
        for inputs, samples in batches:
            head_outputs(model, inputs, samples)
    for h in handles:
        h.remove()
    return {n: (s[1] / s[0], s[2] / s[0] - (s[1] / s[0]) ** 2) for n, s in acc.items()}


def test_statcorr_matches_every_bn_output_of_the_dense_model(setup):
    """METHOD §11.2 statcorr on a pruned (zeroed) tiny CenterPoint: sequential correction gives every BN's
    output (spconv BatchNorm1d and BEV BatchNorm2d) the dense model's per-channel mean and variance on the
    calibration batches; on the dense model itself it changes nothing; weights are never touched."""
    dense, batches = setup
    want = _bn_output_moments(dense, batches)
    model = _zeroed(dense, _masks(dense, density=0.3, max_inputs=10**9))
    before = _bn_output_moments(model, batches)
    weights = {n: p.clone() for n, p in model.named_parameters()}
    records = correct_statistics(model, dense, batches)
    assert set(records) == set(want) and len(want) >= 4
    after = _bn_output_moments(model, batches)
    kinds = set()
    for name, (mean, var) in want.items():
        kinds.add(type(batchnorm_modules(model)[name]).__name__)
        assert not torch.allclose(before[name][0], mean, atol=1e-3), name  # pruning did shift it
        ok = var > 1e-8  # channels that vary in the dense model
        torch.testing.assert_close(after[name][0], mean, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(after[name][1][ok], var[ok], atol=1e-4, rtol=1e-3, msg=name)
    assert kinds == {"BatchNorm1d", "BatchNorm2d"}
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    same = copy.deepcopy(dense)
    correct_statistics(same, dense, batches, bns_per_pass=3)
    for (n, a), b in zip(batchnorm_modules(same).items(), batchnorm_modules(dense).values()):
        torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-5, msg=n)
        torch.testing.assert_close(a.running_var, b.running_var, atol=1e-5, rtol=1e-4, msg=n)


def test_reconstructed_perturbations_match_parallel_reconstruction_and_lower_the_curves(setup):
    """METHOD §11.3: dW^(k) at a coarse count is exactly what parallel reconstruct_model gives for the
    mask 'all but the first m_k of the order'; 0 at count 0, -W at the last; and the reconstruction-aware
    curves start at 0, end at the zeroed curves' value (everything pruned) and are clearly lower in between
    at some levels."""
    import numpy as np

    from dm3d_exp.adapters.reconstruct import reconstructed_perturbations, record_statistics
    from dm3d_exp.adapters.sensitivity import FisherSpec, fisher_curves, reconstructed_fisher_curves

    dense, batches = setup
    names = list(_masks(dense))[:4]
    model = copy.deepcopy(dense)
    layers = {n: m for n, m in prunable_modules(model) if n in names}
    orders = {n: magnitude_order(weight_view(m).detach()) for n, m in layers.items()}
    spec = ReconstructionSpec(layers_per_pass=10_000)
    stats = record_statistics(model, layers, names, batches, spec)
    perts, counts = reconstructed_perturbations(layers, orders, stats, 4, spec.damping)
    for name, m in layers.items():
        w = weight_view(m).detach().to(torch.float64)
        assert counts[name][0] == 0 and counts[name][-1] == w.numel()
        assert not perts[name][0].any()
        torch.testing.assert_close(perts[name][-1], -w.reshape(-1))
    name = names[1]
    j = 2
    keep = torch.ones(weight_view(layers[name]).numel(), dtype=torch.bool)
    keep[orders[name][: int(counts[name][j])]] = False
    check = copy.deepcopy(dense)
    check_layers = {n: m for n, m in prunable_modules(check) if n in names}
    shape = weight_view(check_layers[name]).shape
    masks = {n: (keep.reshape(shape) if n == name else torch.ones_like(weight_view(m), dtype=torch.bool))
             for n, m in check_layers.items()}
    reconstruct_model(check, check_layers, masks, batches, spec)
    fitted = weight_view(check_layers[name]).detach().to(torch.float64)
    torch.testing.assert_close(perts[name][j], (fitted - weight_view(layers[name]).detach().to(torch.float64)).reshape(-1))

    fspec = FisherSpec(num_levels=8, probes_per_frame=4)
    zeroed = fisher_curves(model, layers, batches, fspec, orders)
    aware = reconstructed_fisher_curves(model, layers, batches, fspec, orders, batches, spec, coarse_levels=8)
    lower = 0
    for n in names:
        assert aware[n][0] == 0 and aware[n][-1] == pytest.approx(zeroed[n][-1], rel=1e-9)
        lower += int(np.sum(aware[n][1:-1] < 0.9 * zeroed[n][1:-1]))
    assert lower > 0


def test_pv_rcnn_reconstruction_keeps_every_batchs_dense_proposals():
    """PV-RCNN's RoI head refines the *dense* model's proposals (stored per batch, heads/pv_rcnn.py). The
    calibration passes stop early, so every batch must get its dense proposals before the first layer
    changes; otherwise batches after the first would store the proposals of a partly pruned RPN at the
    first pass that reaches the RoI head. RPN-side layers are pruned and reconstructed; an RoI-head layer
    (kept whole) makes the last pass reach past the RPN."""
    from tiny_detectors import tiny_pv_rcnn

    torch.manual_seed(0)
    dense = he_init(build_detector(tiny_pv_rcnn()))
    points = [random_points(s, n=20000) for s in range(3)]
    fresh = lambda model: [points_batch(model, [p]) for p in points]  # noqa: E731 - new samples, no proposals
    reference = fresh(dense)
    for inputs, samples in reference:
        head_outputs(dense, inputs, samples)
    model = copy.deepcopy(dense)
    all_layers = dict(prunable_modules(model))
    masks = {n: m for n, m in _masks(model, max_inputs=150).items() if n.startswith(("backbone", "neck", "rpn_head"))}
    roi = "roi_head.bbox_head.cls_layer.3"
    masks[roi] = torch.ones_like(weight_view(all_layers[roi]), dtype=torch.bool)
    layers = {n: all_layers[n] for n in masks}
    assert len(masks) >= 5
    batches = fresh(model)
    records = reconstruct_model(model, layers, masks, batches, ReconstructionSpec())
    assert sum(r["status"] == "reconstructed" for r in records.values()) == len(masks) - 1
    changed = [n for n in masks if n != roi and not torch.equal(weight_view(layers[n]), weight_view(dict(prunable_modules(dense))[n]))]
    assert changed  # the RPN really was pruned, so its proposals would differ
    for (_, got), (_, want) in zip(batches, reference):
        for g, w in zip(got, want):
            torch.testing.assert_close(g.proposals.bboxes_3d.tensor, w.proposals.bboxes_3d.tensor)
            torch.testing.assert_close(g.proposals.scores_3d, w.proposals.scores_3d)
