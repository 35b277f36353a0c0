"""Pruned checkpoint round trip through mmengine/mmdet3d strict loading."""
import pytest
import torch
from torch.nn.utils import prune as torch_prune

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.checkpoint import nonzero_report, save_checkpoint, weights_sha256
from dm3d_exp.adapters.detector import build_detector, points_batch
from dm3d_exp.adapters.heads import head_outputs
from dm3d_exp.adapters.layers import prunable_modules
from dm3d_exp.adapters.sensitivity import apply_levels
from dm3d_exp.core.ranking import magnitude_order
from dm3d_exp.adapters.layers import weight_view
from tiny_detectors import random_points, tiny_centerpoint, tiny_pointpillars


@pytest.mark.parametrize("make", [tiny_centerpoint, tiny_pointpillars])
def test_pruned_checkpoint_loads_strictly_and_reproduces_outputs(tmp_path, make):
    torch.manual_seed(0)
    cfg = make()
    det = build_detector(cfg)
    layers = dict(prunable_modules(det))
    orders = {n: magnitude_order(weight_view(m).detach()) for n, m in layers.items()}
    counts = {n: m.weight.numel() // 2 for n, m in layers.items()}
    apply_levels(layers, orders, counts)
    path = save_checkpoint(det, tmp_path / "pruned.pth", meta={"method": "test"})
    loaded = build_detector(cfg, path)
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain weights: no pickled objects
    assert set(state) == {"meta", "state_dict"} and not any(k.endswith(("_orig", "_mask")) for k in state["state_dict"])
    rep = nonzero_report(loaded, layers)
    assert rep["params_total"] - rep["params_nonzero"] >= sum(counts.values())
    batch = points_batch(det, [random_points(3)])
    with torch.no_grad():
        a, b = head_outputs(det, *batch), head_outputs(loaded, *batch)
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-3 * float(a[k].abs().max()) + 1e-12) for k in a)


def test_torch_prune_reparametrisation_is_baked(tmp_path):
    det = build_detector(tiny_pointpillars())
    conv = det.bbox_head.conv_cls
    torch_prune.l1_unstructured(conv, "weight", amount=0.75)
    path = save_checkpoint(det, tmp_path / "p.pth")
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    w = sd["bbox_head.conv_cls.weight"]
    assert "bbox_head.conv_cls.weight_orig" not in sd
    assert int((w == 0).sum()) == round(0.75 * w.numel())
    build_detector(tiny_pointpillars(), path)  # strict load succeeds


def test_weights_hash_ignores_metadata_and_sees_every_weight(tmp_path):
    """The evaluation key's checkpoint identity: same weights + other meta -> same hash; one changed value,
    dtype or a renamed key -> another hash."""
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    a = save_checkpoint(model, tmp_path / "a.pth", meta={"dm3d": {"allocation_key": "x"}})
    b = save_checkpoint(model, tmp_path / "b.pth", meta={"dm3d": {"allocation_key": "y"}})
    assert a.read_bytes() != b.read_bytes() and weights_sha256(a) == weights_sha256(b)
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict holds the same weights
    assert weights_sha256(tmp_path / "bare.pth") == weights_sha256(a)
    state = model.state_dict()
    variants = {"value": {**state, "0.weight": state["0.weight"].clone().index_put_((torch.tensor([0]),), torch.tensor(9.0))},
                "dtype": {**state, "0.bias": state["0.bias"].double()},
                "name": {("0.w" if k == "0.weight" else k): v for k, v in state.items()}}
    hashes = set()
    for name, sd in variants.items():
        torch.save(sd, tmp_path / f"{name}.pth")
        hashes.add(weights_sha256(tmp_path / f"{name}.pth"))
    assert len(hashes) == 3 and weights_sha256(a) not in hashes
