"""Training recipe smoke test: a few iterations on a tiny generated dataset, checkpoint + manifest round trip."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dm3d_exp.data import SynthParams, ensure_dataset
from dm3d_exp.adapters.detector import build_detector
from dm3d_exp.training import TrainOptions, load_config, resolve_detector, train
from dm3d_exp.training.recipe import sha256_file

pytestmark = pytest.mark.mmdet3d


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return ensure_dataset(SynthParams(num_train=8, num_val=2, seed=5),
                          root=tmp_path_factory.mktemp("tiny") / "ds", workers=1)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["pointpillars_synth", pytest.param("centerpoint_voxel_synth", marks=pytest.mark.slow)])
def test_training_smoke_and_checkpoint_round_trip(name, tiny_dataset, tmp_path):
    """4 iterations (CPU, ~50 s on 2 shared cores for PointPillars), then the published files."""
    out = tmp_path / "ckpt"
    manifest = train(TrainOptions(detector=name, max_epochs=1, batch_size=2, threads=1,
                                  data_root=str(tiny_dataset), work_dir=str(tmp_path / "work"),
                                  out_dir=str(out), check_frames=2, log_interval=1))
    tr = manifest["training"]
    assert tr["iterations"] == 4
    assert all(math.isfinite(tr[k]) for k in ("loss_first", "loss_last", "relative_weight_change"))
    assert tr["loss_last"] < tr["loss_first"] or tr["relative_weight_change"] > 0

    # published files: weights only, fp32, manifest consistent with them
    ckpt = out / "model.pth"
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["checkpoint"]["sha256"] == sha256_file(ckpt)
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert set(raw) == {"meta", "state_dict"}
    assert all(v.dtype in (torch.float32, torch.int64) for v in raw["state_dict"].values())
    assert manifest["data"]["params"]["num_train"] == 8
    assert set(manifest["val"]) >= {"mAP", "Car/3d/moderate/R40", "Pedestrian/3d/moderate/R40",
                                    "Cyclist/3d/moderate/R40"}

    # strict load into a model built from the config: no missing or unexpected keys
    spec = resolve_detector(name, require_checkpoint=False)
    model = build_detector(load_config(spec.config, tiny_dataset), ckpt)
    state = model.state_dict()
    assert set(state) == set(raw["state_dict"])
    assert all(torch.equal(state[k], raw["state_dict"][k]) for k in state)
