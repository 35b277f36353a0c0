"""Training recipe smoke test: a few iterations on a tiny generated dataset, checkpoint + manifest round trip."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dm3d_exp.data import SynthParams, ensure_dataset
from dm3d_exp.adapters.detector import build_detector
from dm3d_exp.training import TrainOptions, load_config, resolve_detector, train
from dm3d_exp.fileio import file_sha256

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
    assert manifest["checkpoint"]["sha256"] == file_sha256(ckpt)
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


@pytest.mark.timeout(300)
def test_warm_start_loads_the_weights_and_records_lineage(tiny_dataset, tmp_path):
    """init_from: the run starts from the given weights (with lr 0 they come out unchanged) and the
    manifest names the initial checkpoint and accumulates epochs."""
    common = dict(detector="pointpillars_synth", max_epochs=1, batch_size=2, threads=1,
                  data_root=str(tiny_dataset), check_frames=1, log_interval=1)
    first = train(TrainOptions(**common, work_dir=str(tmp_path / "w1"), out_dir=str(tmp_path / "a")))
    init = tmp_path / "a" / "model.pth"
    second = train(TrainOptions(**common, lr=0.0, init_from=str(init), work_dir=str(tmp_path / "w2"),
                                out_dir=str(tmp_path / "b")))
    lineage = second["training"]["init_from"]
    assert lineage["sha256"] == first["checkpoint"]["sha256"] == file_sha256(init)
    assert lineage["total_epochs"] == 1 and second["training"]["total_epochs"] == 2
    assert lineage["val_mAP"] == first["val"]["mAP"]
    a = torch.load(init, map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pth", map_location="cpu", weights_only=False)["state_dict"]
    model = build_detector(load_config(resolve_detector("pointpillars_synth", require_checkpoint=False).config,
                                       tiny_dataset))
    params = {k for k, _ in model.named_parameters()}
    assert all(torch.equal(a[k], b[k]) for k in params)
    assert first["training"]["init_from"] is None and first["training"]["total_epochs"] == 1


def test_warm_start_from_a_missing_file_is_a_clear_error(tiny_dataset, tmp_path):
    from dm3d_exp.errors import InputError

    with pytest.raises(InputError, match="init_from=.*no such checkpoint"):
        train(TrainOptions(detector="pointpillars_synth", data_root=str(tiny_dataset),
                           init_from=str(tmp_path / "nope.pth"), work_dir=str(tmp_path / "w")))


def test_warm_start_from_a_malicious_pickle_is_refused_and_runs_nothing(tiny_dataset, tmp_path):
    """init_from is read weights-only: a file whose unpickling runs code gets one line naming the opt-in,
    before any data or training, and its code does not run."""
    from dm3d_exp.errors import InputError

    marker = tmp_path / "marker.txt"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('code ran')",)

    bad = tmp_path / "bad.pth"
    torch.save({"meta": {"note": Payload()}, "state_dict": {}}, bad)
    with pytest.raises(InputError, match="trust_checkpoint=true only for a file from a trusted source") as err:
        train(TrainOptions(detector="pointpillars_synth", data_root=str(tiny_dataset), init_from=str(bad),
                           work_dir=str(tmp_path / "w")))
    assert "\n" not in str(err.value) and "detector.trust_checkpoint" not in str(err.value)
    assert not marker.exists() and not (tmp_path / "w").exists()
