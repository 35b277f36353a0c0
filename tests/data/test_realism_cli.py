"""Realism bound against real KITTI frames; the dm3d-synth CLI and its bad-input errors."""
from __future__ import annotations

import json
import shutil

import pytest

from dm3d_exp.data import realism_report
from dm3d_exp.data.cli import main
from dm3d_exp.errors import InputError


def test_realism_within_factor_1_5(shared_data, medium_dataset, tmp_path):
    real = shared_data / "kitti_real_frames"
    rep = realism_report(medium_dataset, real, out_dir=tmp_path)
    summary = {"range": rep["range_ratio"], "object": rep["object_ratio"]}
    assert rep["range_within_bound"], summary
    assert rep["object_within_bound"], summary
    assert json.loads((tmp_path / "realism.json").read_text())["within_bound"] is True
    assert (tmp_path / "realism.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep["real"]["frames"] == 11 and rep["synthetic"]["frames"] == 160


def test_cli_generates_reuses_and_compares(shared_data, small_dataset, small_params, tmp_path, capsys):
    argv = ["--out", str(small_dataset), "--num-train", str(small_params.num_train), "--num-val",
            str(small_params.num_val), "--seed", str(small_params.seed), "--no-progress"]
    assert main(argv + ["--compare-real", str(shared_data / "kitti_real_frames"),
                        "--report-out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert f"dataset: {small_dataset}" in out and "points per object, synthetic/real" in out
    assert (tmp_path / "rep" / "realism.json").is_file() and (tmp_path / "rep" / "realism.png").is_file()


@pytest.mark.parametrize("argv, fragment", [
    (["--num-train", "0"], "num_train=0"),
    (["--num-val", "-2"], "num_val=-2"),
    (["--workers", "0"], "--workers=0"),
])
def test_cli_bad_values(argv, fragment, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err
    assert not (tmp_path / "ds").exists()


def test_cli_out_dir_that_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--num-train", "1", "--num-val", "0", "--no-progress"]) == 2
    assert "manifest.json: missing" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _real_copy(shared_data, tmp_path):
    dst = tmp_path / "real"
    shutil.copytree(shared_data / "kitti_real_frames" / "training", dst / "training")
    return dst


def test_compare_real_bad_inputs(shared_data, small_dataset, small_params, tmp_path, capsys):
    with pytest.raises(InputError, match="real dataset directory does not exist"):
        realism_report(small_dataset, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no real frames found"):
        realism_report(small_dataset, tmp_path / "empty")
    real = _real_copy(shared_data, tmp_path)
    cloud = real / "training" / "velodyne_reduced" / "000008.bin"
    cloud.write_bytes(cloud.read_bytes()[:1001])
    with pytest.raises(InputError, match=r"000008\.bin: point cloud has 1001 bytes"):
        realism_report(small_dataset, real)
    cloud.unlink()
    with pytest.raises(InputError, match=r"000008\.bin: missing point cloud"):
        realism_report(small_dataset, real)
    argv = ["--out", str(small_dataset), "--num-train", str(small_params.num_train), "--num-val",
            str(small_params.num_val), "--seed", str(small_params.seed), "--no-progress",
            "--compare-real", str(real), "--report-out", str(tmp_path / "rep")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "000008.bin" in err
    assert not (tmp_path / "rep").exists()
