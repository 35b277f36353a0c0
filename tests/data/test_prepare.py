"""`dm3d-prepare kitti`: real KITTI frames through mmdet3d's converters, bad layouts as one line, idempotent,
atomic; and end to end: prepare -> `dm3d dataset=kitti` with a zoo detector on the prepared real frames."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")

from dm3d_exp.prepare.cli import main as prepare_main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _labels(root: Path, frames) -> Counter:
    names = Counter()
    for f in frames:
        for line in (root / "training" / "label_2" / f"{f}.txt").read_text().splitlines():
            if line.strip():
                names[line.split()[0]] += 1
    return names


def _copy_root(src: Path, dst: Path, frames=None) -> Path:
    """A writable KITTI root of symlinks to ``src``'s files (optionally only ``frames``)."""
    for sub in ("calib", "label_2", "velodyne", "velodyne_reduced"):
        d = dst / "training" / sub
        d.mkdir(parents=True)
        for p in sorted((src / "training" / sub).glob("*")):
            if frames is None or p.stem in frames:
                os.symlink(p, d / p.name)
    return dst


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "kitti"
    assert prepare_main(["kitti", str(shared_data / "kitti_real_frames"), str(out), "--val-every", "3"]) == 0
    return shared_data / "kitti_real_frames", out


def test_real_frames_become_mmdet3d_infos_reduced_clouds_and_a_gt_database(prepared):
    root, out = prepared
    manifest = json.loads((out / "dm3d_prepare.json").read_text())
    frames = sorted(p.stem for p in (root / "training" / "label_2").glob("*.txt"))
    assert manifest["splits"] == {"train": [f for i, f in enumerate(frames) if i % 3],
                                  "val": [f for i, f in enumerate(frames) if not i % 3]}
    for split in ("train", "val"):
        infos = pickle.loads((out / f"kitti_infos_{split}.pkl").read_bytes())
        assert infos["metainfo"]["info_version"] == "1.1"
        assert [f"{d['sample_idx']:06d}" for d in infos["data_list"]] == manifest["splits"][split]
        for d in infos["data_list"]:
            cloud = np.fromfile(out / "training" / "velodyne_reduced" / d["lidar_points"]["lidar_path"],
                                dtype=np.float32).reshape(-1, 4)
            assert len(cloud) > 1000 and (cloud[:, 0] > 0).all()  # cropped to the front camera's view
            named = _labels(root, [f"{d['sample_idx']:06d}"])
            assert len(d["instances"]) == sum(named.values())  # DontCare too, labelled -1
            assert sum(i["bbox_label_3d"] != -1 for i in d["instances"]) == sum(named.values()) - named["DontCare"]
    full = np.fromfile(root / "training" / "velodyne" / "000001.bin", dtype=np.float32).reshape(-1, 4)
    reduced = np.fromfile(out / "training" / "velodyne_reduced" / "000001.bin", dtype=np.float32).reshape(-1, 4)
    assert len(reduced) < 0.4 * len(full)
    db = pickle.loads((out / "kitti_dbinfos_train.pkl").read_bytes())
    want = {k: v for k, v in _labels(root, manifest["splits"]["train"]).items() if k != "DontCare"}
    assert {k: len(v) for k, v in db.items()} == want
    for entries in db.values():
        for e in entries:
            assert (out / e["path"]).is_file() and not os.path.isabs(e["path"])
    assert manifest["reduced_cloud_as_scan"] == ["000007", "000008", "000009", "002155", "007347"]
    assert len(manifest["image_shape_assumed"]) == len(frames)  # the shared frames carry no image_2


def test_same_inputs_are_a_no_op_and_new_splits_replace_it_atomically(prepared, tmp_path, capsys):
    root, out = prepared
    copy = tmp_path / "kitti"
    shutil.copytree(out, copy, symlinks=True)
    stamp = (copy / "kitti_infos_train.pkl").stat().st_mtime_ns
    assert prepare_main(["kitti", str(root), str(copy), "--val-every", "3"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (copy / "kitti_infos_train.pkl").stat().st_mtime_ns == stamp
    assert prepare_main(["kitti", str(root), str(copy), "--val-every", "2"]) == 0
    assert len(json.loads((copy / "dm3d_prepare.json").read_text())["splits"]["val"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kitti.lock", "kitti"]  # no temporary siblings left (the lock stays, as filelock leaves it)


def test_image_size_comes_from_the_png_header_where_there_is_an_image(shared_data, tmp_path):
    from PIL import Image

    root = _copy_root(shared_data / "kitti_real_frames", tmp_path / "root", frames={"000000", "000001", "000002"})
    (root / "training" / "image_2").mkdir()
    Image.new("RGB", (1224, 370)).save(root / "training" / "image_2" / "000001.png")
    out = tmp_path / "out"
    assert prepare_main(["kitti", str(root), str(out), "--val-every", "3"]) == 0
    infos = pickle.loads((out / "kitti_infos_train.pkl").read_bytes())["data_list"]
    cam = {f"{d['sample_idx']:06d}": d["images"]["CAM2"] for d in infos}
    assert (cam["000001"]["height"], cam["000001"]["width"]) == (370, 1224)
    assert (cam["000002"]["height"], cam["000002"]["width"]) == (375, 1242)
    assert json.loads((out / "dm3d_prepare.json").read_text())["image_shape_assumed"] == ["000000", "000002"]


@pytest.mark.parametrize("break_it,args,match", [
    (lambda r: shutil.rmtree(r / "training" / "calib"), [], r"training/calib is missing"),
    (lambda r: [p.unlink() for p in (r / "training" / "velodyne").glob("*")] and
     [p.unlink() for p in (r / "training" / "velodyne_reduced").glob("*")], [], r"has no \.bin clouds"),
    (lambda r: (r / "training" / "calib" / "000001.txt").unlink(), [], r"calib/000001.txt is missing"),
    (lambda r: (r / "training" / "velodyne" / "000001.bin").unlink(), [], r"velodyne/000001.bin is missing"),
    (lambda r: None, ["--no-split"], r"ImageSets/train.txt is missing: expected KITTI's split files"),
    (lambda r: None, ["--val-every", "1"], r"--val-every=1: expected an integer >= 2"),
    (lambda r: [(r / "training" / "label_2" / f"{f}.txt").unlink() for f in ("000001", "000002")],
     ["--val-every", "2"], r"the train split is empty"),
    (lambda r: ((r / "ImageSets").mkdir(), (r / "ImageSets" / "train.txt").write_text("000001\n000099\n"),
                (r / "ImageSets" / "val.txt").write_text("000002\n")), ["--no-split"],
     r"lists frame '000099' \(1 in all\)"),
])
def test_bad_layouts_are_one_line_exit_2_and_write_nothing(shared_data, tmp_path, capsys, break_it, args, match):
    import re

    root = _copy_root(shared_data / "kitti_real_frames", tmp_path / "root", frames={"000000", "000001", "000002"})
    break_it(root)
    split = [] if "--no-split" in args else (args or ["--val-every", "3"])
    out = tmp_path / "out"
    assert prepare_main(["kitti", str(root), str(out), *split]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and re.search(match, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_an_existing_foreign_output_is_refused(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert prepare_main(["kitti", str(shared_data / "kitti_real_frames"), str(out), "--val-every", "3"]) == 2
    assert "is not a dm3d-prepare output" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


@pytest.mark.slow
def test_prepare_then_dm3d_on_real_frames_with_a_zoo_detector(prepared, tmp_path):
    """The path, not the mAP: a random-init PointPillars (mmdet3d's KITTI config) through every stage on the
    prepared real frames; the evaluation scores the val frames' own ground truth."""
    import torch

    from dm3d_exp.adapters.checkpoint import save_checkpoint
    from dm3d_exp.adapters.detector import build_detector
    from dm3d_exp.adapters.layers import he_normal_

    root, out = prepared
    torch.manual_seed(0)
    config = "mmdet3d::pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py"
    ckpt = save_checkpoint(he_normal_(build_detector(config)), tmp_path / "pp.pth")
    cmd = [sys.executable, "-c", "from dm3d_exp.cli import main; main()", "dataset=kitti", f"dataset.root={out}",
           "detector=pointpillars_kitti", f"detector.checkpoint={ckpt}", "pruning=dm3d", "pruning.flops_target=0.5",
           "recovery=none", "sensitivity=fisher", "sensitivity.num_levels=20", "calib.num_frames=2",
           "calib.reference_frames=2", "eval.distortion_frames=2", "eval.bootstrap=0", "threads=1", "progress=false",
           "tracking=off", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    manifest = json.loads((out / "dm3d_prepare.json").read_text())
    val_cars = _labels(root, manifest["splits"]["val"])["Car"]
    assert summary["pruned/eval/num_gt/Car"] == summary["dense/eval/num_gt/Car"] == val_cars
    assert abs(summary["pruned/cost/flops_reduction"] - 2.0) < 0.05
