"""`dm3d-prepare nuscenes` on a nuScenes root written from the real sample (nuscenes_tables.py): mmdet3d's
converters run through it and give the sample's own mmdet3d info back (boxes, labels, poses, camera
boxes); bad layouts are one line; the same inputs are a no-op; and `dm3d` runs on the prepared root."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet3d", reason="mmdet3d not installed")
pytest.importorskip("nuscenes", reason="nuscenes-devkit not installed")

from dm3d_exp.prepare.cli import main as prepare_main  # noqa: E402
from dm3d_exp.prepare.nuscenes import prepare_nuscenes  # noqa: E402
from nuscenes_tables import SCENES, write_root  # noqa: E402



@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("nusprep")
    src = write_root(shared_data, base / "root")
    out = prepare_nuscenes(base / "root", base / "out", log=lambda *a: None)
    return src, base / "root", out


def _load(path: Path) -> dict:
    return pickle.loads(path.read_bytes())


def test_the_converters_give_the_samples_own_info_back(prepared):
    src, _, out = prepared
    info = src["info"]
    kept = [i for i in info["instances"] if i["bbox_label_3d"] >= 0]
    train, val = _load(out / "nuscenes_infos_train.pkl"), _load(out / "nuscenes_infos_val.pkl")
    assert train["metainfo"]["version"] == "v1.0-mini"
    assert [len(train["data_list"]), len(val["data_list"])] == [n for _, n in SCENES]
    # one sweep: the train scene's second key frame sees the first one's LIDAR_TOP record
    assert [len(d.get("lidar_sweeps", [])) for d in train["data_list"]] == [0, 1]  # (no key when none)
    for frame in train["data_list"] + val["data_list"]:
        boxes = np.array([i["bbox_3d"] for i in frame["instances"]])
        ref = np.array([i["bbox_3d"] for i in kept])
        assert boxes.shape == ref.shape
        np.testing.assert_allclose(boxes[:, :6], ref[:, :6], atol=1e-5)
        assert np.abs(np.angle(np.exp(1j * (boxes[:, 6] - ref[:, 6])))).max() < 1e-6
        assert [i["bbox_label_3d"] for i in frame["instances"]] == [i["bbox_label_3d"] for i in kept]
        assert [i["num_lidar_pts"] for i in frame["instances"]] == [i["num_lidar_pts"] for i in kept]
        np.testing.assert_allclose(frame["ego2global"], info["ego2global"], atol=1e-6)
        np.testing.assert_allclose(frame["lidar_points"]["lidar2ego"], info["lidar_points"]["lidar2ego"], atol=1e-6)
        # the camera boxes mmdet3d projects from the tables: as many as in mmdet3d's own info of the sample
        assert {c: len(v) for c, v in frame["cam_instances"].items()} == \
               {c: len(v) for c, v in info["cam_instances"].items()}
        assert (out / "samples" / "LIDAR_TOP" / frame["lidar_points"]["lidar_path"]).is_file()
    db = _load(out / "nuscenes_dbinfos_train.pkl")
    names = {v: k for k, v in train["metainfo"]["categories"].items()}
    with_points = {}
    for i in kept:
        if i["num_lidar_pts"] > 0:
            with_points[names[i["bbox_label_3d"]]] = with_points.get(names[i["bbox_label_3d"]], 0) + 2  # 2 train frames
    assert {k: len(v) for k, v in db.items()} == with_points
    record = json.loads((out / "dm3d_prepare.json").read_text())
    assert record["scenes"] == {"train": ["scene-0061"], "val": ["scene-0103"]} and record["max_sweeps"] == 10


def test_same_inputs_are_a_no_op_and_the_source_is_never_written(prepared):
    _, root, out = prepared
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    said = []
    prepare_nuscenes(root, out, log=said.append)
    assert said == [f"{out} is up to date (1 train scene(s), 1 val scene(s))"]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not any(p.name.startswith("nuscenes_") for p in root.iterdir())  # infos went to out only


def _break(kind):
    def apply(root: Path):
        tables = root / "v1.0-mini"
        if kind == "table":
            (tables / "instance.json").unlink()
        elif kind == "lidar":
            next((root / "samples" / "LIDAR_TOP").glob("*.bin")).unlink()
        elif kind == "split":
            scenes = json.loads((tables / "scene.json").read_text())
            (tables / "scene.json").write_text(json.dumps([s for s in scenes if s["name"] != "scene-0103"]))
        elif kind == "versions":
            (root / "v1.0-trainval").mkdir()
    return apply


@pytest.mark.parametrize("kind,args,match", [
    ("table", [], r"v1.0-mini/instance.json is missing: a nuScenes v1.0-mini root needs the tables"),
    ("lidar", [], r"samples/LIDAR_TOP/.*\.pcd\.bin is missing \(1 of the 3 LIDAR_TOP files"),
    ("split", [], r"scene.json has no scene of the official v1.0-mini val split \(mini_val: scene-0103"),
    ("versions", [], r"has table folders \['v1.0-mini', 'v1.0-trainval'\]: expected exactly one"),
    (None, ["--version", "v1.0-test"], r"--version='v1.0-test': expected one of"),
    (None, ["--max-sweeps", "11"], r"--max-sweeps=11: expected 0..10"),
])
def test_bad_layouts_are_one_line_and_write_nothing(shared_data, tmp_path, capsys, kind, args, match):
    root = tmp_path / "root"
    write_root(shared_data, root)
    if kind:
        _break(kind)(root)
    assert prepare_main(["nuscenes", str(root), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and re.search(match, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dm3d_runs_every_stage_on_the_prepared_root(prepared, tmp_path):
    """The prepared root with its tables: every stage on the zoo CenterPoint (random init), scored by
    mmdet3d's NuScenesMetric (the tables are there)."""
    from zoo_centerpoint_run import run_zoo_centerpoint

    _, _, out = prepared
    summary = run_zoo_centerpoint(out, tmp_path, "eval.distortion_frames=0")
    assert abs(summary["pruned/cost/flops_reduction"] - 2.0) < 0.05
    assert 0.0 <= summary["pruned/eval/mAP"] <= 100.0 and 0.0 <= summary["dense/eval/mAP"] <= 100.0
