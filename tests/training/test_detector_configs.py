"""Detector yaml entries: synthetic-benchmark configs build, model-zoo entries demand checkpoint and data root."""
from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dm3d_exp.errors import InputError
from dm3d_exp.training import available_detectors, load_config, load_detector_conf, resolve_detector
from dm3d_exp.training.cli import main, parse_options
from dm3d_exp.training.detectors import repo_root

ZOO = ["pointpillars_kitti", "second_kitti", "centerpoint_voxel_nus", "pv_rcnn_kitti"]
SYNTH = ["pointpillars_synth", "centerpoint_voxel_synth", "second_synth"]


def test_all_detectors_listed():
    assert set(ZOO + SYNTH) <= set(available_detectors())


@pytest.mark.parametrize("name", ZOO + SYNTH)
def test_yaml_fields(name):
    conf = load_detector_conf(name)
    assert conf.name == name
    # classes and range live in the mmdet3d config only (no second copy in the yaml to drift)
    assert set(conf) == {"name", "mmdet3d_config", "checkpoint", "trust_checkpoint"}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_entry_requires_checkpoint_and_data_root(name, tmp_path):
    conf = load_detector_conf(name)
    assert OmegaConf.is_missing(conf, "checkpoint")
    with pytest.raises(InputError, match=r"checkpoint is required \(pass detector.checkpoint=PATH\)") as e:
        resolve_detector(conf, data_root=tmp_path)
    assert "\n" not in str(e.value)
    ckpt = tmp_path / "model.pth"
    conf.checkpoint = str(ckpt)
    with pytest.raises(InputError, match=f"checkpoint {ckpt} does not exist$"):
        resolve_detector(conf, data_root=tmp_path)
    ckpt.write_bytes(b"")
    with pytest.raises(InputError, match=r"needs the dataset root .*\(pass dataset.root=PATH"):
        resolve_detector(conf)
    with pytest.raises(InputError, match="is not a directory"):
        resolve_detector(conf, data_root=tmp_path / "absent")
    spec = resolve_detector(conf, data_root=tmp_path)
    site = spec.config.relative_to(__import__("mmdet3d").__path__[0])
    assert site.parts[:2] == (".mim", "configs") and spec.config.is_file()
    assert spec.checkpoint == ckpt and spec.data_root == tmp_path


@pytest.mark.parametrize("name", ZOO)
def test_zoo_config_loads_and_rebases_onto_data_root(name, tmp_path):
    spec = resolve_detector(name, require_checkpoint=False, data_root=tmp_path)
    cfg = load_config(spec.config, spec.data_root)
    root = str(tmp_path) + "/"
    assert cfg.data_root == root
    assert cfg.val_dataloader.dataset.data_root == root
    assert cfg.val_evaluator.ann_file.startswith(root)


def test_run_config_schema_accepts_detector_yamls():
    """The pipeline's typed DetectorConf takes every detector yaml as is (no extra keys)."""
    from dm3d_exp.schema import DetectorConf

    for name in available_detectors():
        OmegaConf.merge(OmegaConf.structured(DetectorConf), load_detector_conf(name))


def test_unknown_detector_and_bad_fields(tmp_path):
    with pytest.raises(InputError, match="detector='nope' is unknown, expected one of"):
        resolve_detector("nope")
    conf = OmegaConf.to_container(load_detector_conf("pointpillars_synth"))
    del conf["mmdet3d_config"]
    with pytest.raises(InputError, match="field 'mmdet3d_config' is missing"):
        resolve_detector(conf, require_checkpoint=False)
    conf = OmegaConf.to_container(load_detector_conf("pointpillars_synth"))
    conf["mmdet3d_config"] = str(tmp_path / "none.py")
    with pytest.raises(InputError, match="does not exist"):
        resolve_detector(conf, require_checkpoint=False)
    conf = OmegaConf.to_container(load_detector_conf("pointpillars_synth"))
    conf["checkpoint"] = None
    with pytest.raises(InputError, match=r"checkpoint is null \(train it: make train-reference DETECTOR="):
        resolve_detector(conf)
    conf["checkpoint"] = str(tmp_path / "none.pth")
    with pytest.raises(InputError, match=r"does not exist \(train it: make train-reference"):
        resolve_detector(conf)


def test_cli_rejects_bad_options(capsys):
    assert main(["max_epochs=abc"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["epochs"]) == 2
    assert main(["detector=nope"]) == 2
    assert "unknown" in capsys.readouterr().err
    opts = parse_options(["detector=centerpoint_voxel_synth", "max_epochs=3", "data.num_train=10"])
    assert (opts.detector, opts.max_epochs, opts.data) == ("centerpoint_voxel_synth", 3, {"num_train": 10})


def test_cli_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "dm3d_exp.training.cli", "--help"], capture_output=True, text=True,
                         cwd=repo_root(), check=True).stdout
    assert "detector=pointpillars_synth" in out


@pytest.mark.mmdet3d
@pytest.mark.parametrize("name", SYNTH)
def test_synthetic_detector_builds_and_predicts(name, tmp_path):
    """Parameter budget (1-5 M) and one forward on a generated frame; layers include the prunable kinds."""
    import torch

    from dm3d_exp.adapters.layers import prunable_modules
    from dm3d_exp.data import SynthParams, ensure_dataset
    from dm3d_exp.adapters.detector import build_detector
    from dm3d_exp.training import evaluate

    root = ensure_dataset(SynthParams(num_train=1, num_val=2, seed=2), root=tmp_path / "ds", workers=1)
    spec = resolve_detector(name, require_checkpoint=False)
    cfg = load_config(spec.config, root)
    assert list(cfg.point_cloud_range) == [0, -38.4, -3, 51.2, 38.4, 1]  # the generator's range
    assert tuple(cfg.class_names) == ("Pedestrian", "Cyclist", "Car")
    torch.manual_seed(0)
    model = build_detector(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert 1e6 <= params <= 5e6
    kinds = {type(m).__name__ for _, m in prunable_modules(model)}
    if name.startswith("centerpoint"):
        assert {"SubMConv3d", "SparseConv3d"} <= kinds
    metrics = evaluate(model, cfg, num_frames=2)
    assert 0.0 <= metrics["mAP"] <= 100.0


@pytest.mark.parametrize("name", ZOO + SYNTH)
def test_every_shipped_detectors_head_has_an_extractor(name, tmp_path):
    """The head-extractor registry knows the head class of every shipped detector config (an unregistered
    one is refused at the first forward, which the tiny-model tests would not see)."""
    from dm3d_exp.adapters.heads import HEADS

    cfg = load_config(resolve_detector(name, require_checkpoint=False, data_root=tmp_path).config)
    heads = {k: cfg.model[k].type.split(".")[-1] for k in ("bbox_head", "pts_bbox_head", "roi_head") if cfg.model.get(k)}
    registered = {t for _, cls in HEADS.items() for t in cls.head_types}
    assert heads and set(heads.values()) <= registered, heads
