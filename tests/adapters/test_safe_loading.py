"""Checkpoints are never unpickled beyond torch's weights-only loader (plus data-only types) unless trusted.

The loader under test is the real one (``read_checkpoint_file`` / ``load_state_strict``); models are tiny torch.nn
modules, mmengine training checkpoints are written by a real mmengine Runner, and the mmdet3d path uses
the tiny detector configs of ``tiny_detectors``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dm3d_exp.adapters.checkpoint import load_state_strict, read_checkpoint_file, save_checkpoint
from dm3d_exp.errors import InputError


def _net(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2))


class _Payload:
    """Unpickling it runs ``exec``: it writes ``marker``, as a hostile checkpoint would do anything else."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _malicious(tmp_path, zip_format=True):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "model.pth"
    torch.save({"meta": {"note": _Payload(marker)}, "state_dict": _net().state_dict()}, path,
               _use_new_zipfile_serialization=zip_format)
    return path, marker


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, zip_format):
    path, marker = _malicious(tmp_path, zip_format)
    with pytest.raises(InputError) as err:
        read_checkpoint_file(path)
    msg = str(err.value)
    assert not marker.exists()
    assert "\n" not in msg and "model.pth" in msg and "detector.trust_checkpoint=true" in msg
    assert ("builtins.exec" if zip_format else "GLOBAL exec") in msg and "arbitrary code execution" in msg


def test_trusted_malicious_pickle_loads_and_runs_its_code(tmp_path):
    """trust=True is the documented risk: the file's code runs (here: writes the marker)."""
    path, marker = _malicious(tmp_path)
    with pytest.warns(UserWarning, match="trust_checkpoint"):
        contents = read_checkpoint_file(path, trust=True)
    assert marker.read_text() == "code ran"
    model = _net()
    load_state_strict(model, contents, path, "the test net")
    assert torch.equal(model[0].weight, _net()[0].weight)


@pytest.mark.parametrize("content", [b"hello world\nthis is not a checkpoint\n", b"", bytes(range(256)) * 8])
def test_text_empty_and_random_files_give_one_line_input_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"weights.pth.*not a readable torch file") as err:
        read_checkpoint_file(path)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not a readable torch file"):
        read_checkpoint_file(path, trust=True)  # trust does not turn garbage into a checkpoint


def test_truncated_and_missing_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": _net().state_dict()}, good)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(InputError, match="broken.pth.*not a readable torch file"):
        read_checkpoint_file(broken)
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint_file(tmp_path / "missing.pth")


def test_weights_only_state_dicts_load(tmp_path):
    net = _net()
    bare, saved = tmp_path / "bare.pth", tmp_path / "saved.pth"
    torch.save(net.state_dict(), bare)
    save_checkpoint(net, saved, meta={"method": "test", "levels": [1, 2]})
    for path in (bare, saved):
        fresh = _net(4)
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        load_state_strict(fresh, read_checkpoint_file(path), path, "the test net")
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    assert read_checkpoint_file(saved)["meta"] == {"method": "test", "levels": [1, 2]}


def test_numpy_data_in_a_checkpoint_loads_without_trust(tmp_path):
    path = tmp_path / "np.pth"
    meta = {"a": np.arange(5, dtype=np.float32), "s": np.float64(2.5), "i": np.int64(3),
            "o": np.array([1, "x"], dtype=object), "u": np.array(["ab", "c"])}
    torch.save({"meta": meta, "state_dict": _net().state_dict()}, path)
    got = read_checkpoint_file(path)["meta"]
    assert np.array_equal(got["a"], meta["a"]) and got["a"].dtype == np.float32
    assert got["s"] == 2.5 and got["i"] == 3 and list(got["o"]) == [1, "x"] and list(got["u"]) == ["ab", "c"]


def _mmengine_training_checkpoint(work_dir):
    """epoch_2.pth of a real 2-epoch mmengine Runner run (AdamW, clipped grads, cosine LR and momentum
    schedules as in conf/detector/mmdet3d/_base_synth_kitti.py, a validation metric, CheckpointHook)."""
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, inputs, data_samples=None, mode="tensor"):
            out = self.net(torch.stack(inputs) if isinstance(inputs, list) else inputs)
            return {"loss": out.pow(2).mean()} if mode == "loss" else [out]

    class Metric(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(1.0)

        def compute_metrics(self, results):
            return {"mAP": float(np.mean(results))}

    data = [dict(inputs=torch.randn(3, generator=torch.Generator().manual_seed(i))) for i in range(8)]
    loader = dict(batch_size=4, dataset=data, sampler=dict(type="DefaultSampler", shuffle=False),
                  collate_fn=dict(type="default_collate"))
    sched = dict(by_epoch=True, convert_to_iter_based=True)
    runner = Runner(
        model=Toy(), work_dir=str(work_dir), train_dataloader=loader, val_dataloader=loader, val_evaluator=[Metric()],
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, betas=(0.95, 0.99)),
                           clip_grad=dict(max_norm=35, norm_type=2)),
        param_scheduler=[dict(type="CosineAnnealingLR", T_max=1, eta_min=1e-2, begin=0, end=1, **sched),
                         dict(type="CosineAnnealingMomentum", T_max=1, eta_min=0.9, begin=0, end=1, **sched),
                         dict(type="CosineAnnealingLR", T_max=1, eta_min=1e-6, begin=1, end=2, **sched)],
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), val_cfg=dict(),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)),
        randomness=dict(seed=0), launcher="none")
    runner.train()
    return work_dir / "epoch_2.pth", runner.model


def test_mmengine_training_checkpoint_loads_without_trust(tmp_path):
    pytest.importorskip("mmengine")
    path, trained = _mmengine_training_checkpoint(tmp_path / "work")
    raw_names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "mmengine.logging.history_buffer.HistoryBuffer" in raw_names  # not loadable by plain weights_only
    contents = read_checkpoint_file(path)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(contents)
    assert contents["meta"]["epoch"] == 2
    loss = contents["message_hub"]["log_scalars"]["train/loss"]
    assert np.isfinite(loss.mean()) and loss.statistics("current") == loss.current()
    assert contents["optimizer"]["param_groups"][0]["betas"][1] == 0.99
    fresh = type(trained)()
    with torch.no_grad():
        fresh.net[0].weight.zero_()
    load_state_strict(fresh, contents, path, "the test net")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))


def test_getattr_in_a_checkpoint_is_limited_to_history_buffer_methods(tmp_path):
    """The allow-list maps ``builtins.getattr`` to a lookup of HistoryBuffer's methods only."""
    path = tmp_path / "getattr.pth"

    class Sneaky:
        def __reduce__(self):
            return getattr, (np.ndarray, "tofile")  # np.ndarray itself is allowed

    torch.save({"x": Sneaky()}, path)
    with pytest.raises(InputError, match=r"getattr\(<class 'numpy.ndarray'>, 'tofile'\) is not allowed.*trust_checkpoint"):
        read_checkpoint_file(path)


def test_another_architecture_gives_one_input_error_with_keys(tmp_path):
    path = tmp_path / "other.pth"
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2), nn.Linear(2, 7))
    torch.save({"meta": {}, "state_dict": other.state_dict()}, path)
    with pytest.raises(InputError) as err:
        load_state_strict(_net(), read_checkpoint_file(path), path, "detector config 'tiny.py' (model Toy)")
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 600 and "other.pth" in msg and "detector config 'tiny.py'" in msg
    assert "4 missing keys (1.running_mean, 1.running_var, 3.weight, 3.bias)" in msg
    assert "2 unexpected keys (2.weight, 2.bias)" in msg
    assert "3 shape mismatches (checkpoint vs model) (0.weight (4, 3, 3, 3) vs (4, 3), 1.weight (2, 4) vs (4,), ...)" in msg
    with pytest.raises(InputError, match="holds a Tensor, not a state dict"):
        load_state_strict(_net(), torch.zeros(3), path, "the test net")


@pytest.mark.mmdet3d
def test_build_detector_refuses_malicious_and_foreign_checkpoints(tmp_path):
    pytest.importorskip("mmdet3d", reason="mmdet3d not installed")
    from dm3d_exp.adapters.detector import build_detector
    from tiny_detectors import tiny_centerpoint, tiny_pointpillars

    pp = build_detector(tiny_pointpillars())
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "pruned.pth"  # as a tampered cache entry would be
    torch.save({"meta": _Payload(marker), "state_dict": pp.state_dict()}, evil)
    with pytest.raises(InputError, match="trust_checkpoint"):
        build_detector(tiny_pointpillars(), evil)
    assert not marker.exists()
    foreign = save_checkpoint(build_detector(tiny_centerpoint()), tmp_path / "centerpoint.pth")
    with pytest.raises(InputError, match=r"centerpoint.pth.*does not fit detector config .*model VoxelNet.*missing keys"):
        build_detector(tiny_pointpillars(), foreign)
