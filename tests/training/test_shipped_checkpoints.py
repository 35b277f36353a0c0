"""Each shipped reference checkpoint (checkpoints/<name>/) loads and reproduces its manifest's numbers."""
from __future__ import annotations

import json

import pytest

from dm3d_exp.adapters.detector import build_detector
from dm3d_exp.training import available_detectors, evaluate, load_config, resolve_detector
from dm3d_exp.training.detectors import repo_root
from dm3d_exp.fileio import file_sha256
from dm3d_exp.training.recipe import CHECKPOINT_FILE, MANIFEST_FILE, config_sha256, headline

pytestmark = [pytest.mark.mmdet3d, pytest.mark.slow]

SHIPPED = [n for n in available_detectors() if (repo_root() / "checkpoints" / n / MANIFEST_FILE).is_file()]


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints in checkpoints/")
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.timeout(600)
def test_shipped_checkpoint_reproduces_manifest(name, torch_threads):
    from dm3d_exp.data import GENERATOR_VERSION, SynthParams, ensure_dataset

    folder = repo_root() / "checkpoints" / name
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    spec = resolve_detector(name)
    assert spec.checkpoint == folder / CHECKPOINT_FILE
    assert file_sha256(spec.checkpoint) == manifest["checkpoint"]["sha256"]
    assert config_sha256(spec.config) == manifest["config"]["sha256"], "config changed since training"
    assert spec.checkpoint.stat().st_size <= 20 * 2**20
    if manifest["data"]["generator_version"] != GENERATOR_VERSION:
        pytest.skip(f"checkpoint trained on generator version {manifest['data']['generator_version']}, "
                    f"installed generator is {GENERATOR_VERSION}: retrain it")
    root = ensure_dataset(SynthParams.from_dict(manifest["data"]["params"]))
    cfg = load_config(spec.config, root)
    model = build_detector(cfg, spec.checkpoint)  # strict: no missing / unexpected keys
    check = manifest["check_subset"]
    # score with the training run's thread count: spconv's CPU sums depend on it, and with few Cyclists in
    # the check subset a reordered float sum can move one detection across a score threshold
    with torch_threads(manifest["training"]["machine"]["torch_threads"]):
        got = headline(evaluate(model, cfg, check["first_frames"]))
    assert got["mAP"] == pytest.approx(check["mAP"], abs=0.5)
    for key in ("Car/3d/moderate/R40", "Pedestrian/3d/moderate/R40", "Cyclist/3d/moderate/R40"):
        assert got[key] == pytest.approx(check[key], abs=1.0)
