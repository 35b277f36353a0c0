"""Parameters validation, cache location/reuse/locking and atomic publication."""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from dm3d_exp.data import SynthParams, check_dataset, dataset_dir, default_cache_root, ensure_dataset
from dm3d_exp.data import cache as cache_mod
from dm3d_exp.data import params as params_mod
from dm3d_exp.errors import InputError


@pytest.mark.parametrize("kwargs, fragment", [
    ({"num_train": 0}, "num_train=0"),
    ({"num_val": -1}, "num_val=-1"),
    ({"num_train": 2.5}, "num_train=2.5"),
    ({"seed": True}, "seed=True"),
    ({"azimuth_step_deg": 0.01}, "azimuth_step_deg=0.01"),
    ({"azimuth_half_window_deg": 30.0}, "azimuth_half_window_deg=30.0"),
    ({"dropout": math.nan}, "dropout=nan"),
    ({"range_noise_m": "0.1"}, "range_noise_m='0.1'"),
])
def test_bad_params_raise_input_error_naming_value_and_range(kwargs, fragment):
    with pytest.raises(InputError) as e:
        SynthParams(**kwargs)
    msg = str(e.value)
    assert fragment in msg and "expected" in msg and "[" in msg and "\n" not in msg


def test_unknown_param_and_int_to_float():
    with pytest.raises(InputError, match="unknown synthetic dataset parameter"):
        SynthParams.from_dict({"num_train": 3, "bogus": 1})
    p = SynthParams(azimuth_step_deg=1)
    assert isinstance(p.azimuth_step_deg, float)
    assert SynthParams.from_dict(p.to_dict()) == p


def test_digest_covers_every_parameter_and_version(monkeypatch):
    base = SynthParams()
    digests = {base.digest()}
    for name, value in [("num_train", 7), ("num_val", 7), ("seed", 1), ("azimuth_step_deg", 0.2),
                        ("azimuth_half_window_deg", 60.0), ("range_noise_m", 0.03), ("dropout", 0.1),
                        ("intensity_noise", 0.05), ("max_range_m", 100.0), ("object_density", 1.5)]:
        digests.add(SynthParams(**{**base.to_dict(), name: value}).digest())
    assert len(digests) == 11
    monkeypatch.setattr(params_mod, "GENERATOR_VERSION", "test")
    assert base.digest() not in digests


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    p = SynthParams(num_train=2, num_val=1)
    assert default_cache_root() == tmp_path / "dm3d-exp" / "datasets"
    assert dataset_dir(p) == tmp_path / "dm3d-exp" / "datasets" / f"synthetic_kitti-{p.digest()}"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == Path.home() / ".cache" / "dm3d-exp" / "datasets"


def test_cache_generates_once_and_reuses(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    p = SynthParams(num_train=2, num_val=1, seed=3)
    calls = []
    real = cache_mod.generate_dataset

    def counting(*a, **k):
        calls.append(1)
        time.sleep(0.3)  # widen the race window
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "generate_dataset", counting)
    roots = []
    threads = [threading.Thread(target=lambda: roots.append(ensure_dataset(p, workers=1))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and roots[0] == roots[1] == dataset_dir(p)
    manifest = json.loads((roots[0] / "manifest.json").read_text())
    assert manifest["params"] == p.to_dict() and manifest["counts"]["train"] == 2
    assert ensure_dataset(p) == roots[0] and len(calls) == 1
    assert sorted(x.name for x in roots[0].parent.iterdir()) == sorted([roots[0].name, f".{roots[0].name}.lock"])


def test_failed_generation_leaves_nothing(monkeypatch, tmp_path):
    def broken(params, root, **k):
        (Path(root) / "training").mkdir()
        (Path(root) / "training" / "partial.bin").write_bytes(b"1234")
        raise RuntimeError("disk full")

    monkeypatch.setattr(cache_mod, "generate_dataset", broken)
    target = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_dataset(SynthParams(num_train=1, num_val=0), root=target)
    assert not target.exists()
    assert [x.name for x in tmp_path.iterdir()] == [".ds.lock"]


def test_existing_foreign_or_mismatched_dir_is_an_input_error(tmp_path, small_dataset, small_params):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"manifest.json: missing"):
        ensure_dataset(small_params, root=foreign)
    with pytest.raises(InputError, match="other parameters"):
        ensure_dataset(SynthParams(num_train=6, num_val=3, seed=12), root=small_dataset)
    assert ensure_dataset(small_params, root=small_dataset) == small_dataset


def test_check_dataset_names_truncated_or_missing_file(tmp_path, small_dataset):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    check_dataset(copy)
    cloud = copy / "training" / "velodyne_reduced" / "000004.bin"
    cloud.write_bytes(cloud.read_bytes()[:-3])
    with pytest.raises(InputError, match=r"000004\.bin: point cloud has \d+ bytes"):
        check_dataset(copy)
    cloud.unlink()
    with pytest.raises(InputError, match=r"000004\.bin: missing point cloud"):
        check_dataset(copy)
    with pytest.raises(InputError, match="does not exist"):
        check_dataset(tmp_path / "nowhere")
