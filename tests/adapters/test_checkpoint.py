"""Pruned checkpoint round trip through mmengine/mmdet3d strict loading."""
import pytest
import torch
from torch.nn.utils import prune as torch_prune

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.adapters.checkpoint import nonzero_report, save_checkpoint
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
    state = torch.load(path, map_location="cpu", weights_only=False)
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
    sd = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    w = sd["bbox_head.conv_cls.weight"]
    assert "bbox_head.conv_cls.weight_orig" not in sd
    assert int((w == 0).sum()) == round(0.75 * w.numel())
    build_detector(tiny_pointpillars(), path)  # strict load succeeds


class _Opaque:
    """Stands for mmengine's pickled training state (message hub buffers) in a checkpoint."""

    def __init__(self):
        self.history = [1.0, 2.0]


def test_read_checkpoint_training_state_and_bad_files(tmp_path):
    from dm3d_exp.adapters.detector import read_checkpoint
    from dm3d_exp.errors import InputError

    det = build_detector(tiny_pointpillars())
    path = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": det.state_dict(), "message_hub": _Opaque()}, path)
    loaded = build_detector(tiny_pointpillars(), path)  # weights_only=False fallback for training files
    assert all(torch.equal(a, b) for a, b in zip(det.state_dict().values(), loaded.state_dict().values()))
    assert read_checkpoint(path)["message_hub"].history == [1.0, 2.0]
    broken = tmp_path / "broken.pth"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="broken.pth.*not a readable torch file"):
        read_checkpoint(broken)
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
