"""`dm3d-kitti-eval` (dm3d_exp.kitti.eval_cli.main): results JSON, table, and bad input -> exit 2."""
import json

import pytest

from dm3d_exp.kitti.eval_cli import main

GT_LINES = [
    "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59",
    "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
    "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01",
    "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10",
]


def det_line(gt_line, score):
    return f"{gt_line} {score:.3f}"


def write_case(tmp_path, n_frames=3, skip_det=(), det_extra=None):
    gt_dir, det_dir = tmp_path / "gt", tmp_path / "det"
    gt_dir.mkdir()
    det_dir.mkdir()
    for i in range(n_frames):
        (gt_dir / f"{i:06d}.txt").write_text("\n".join(GT_LINES) + "\n")
        if i in skip_det:
            continue
        lines = [det_line(l, 0.9 - 0.1 * k) for k, l in enumerate(GT_LINES[:3])] if i != 1 else []
        if det_extra and i == 0:
            lines.append(det_extra)
        (det_dir / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return gt_dir, det_dir


def run_bad(capsys, argv, out, match):
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err, err
    assert not out.exists()
    return err


def test_cli_writes_json_and_table(tmp_path, capsys):
    gt_dir, det_dir = write_case(tmp_path)
    out = tmp_path / "res" / "results.json"
    assert main([str(gt_dir), str(det_dir), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    # Car and Pedestrian detected (Cyclist not: the devkit skips it); frame 1 has an empty result file
    assert len(res) == 2 * 4 * 3 * 2
    assert all(k.count("/") == 3 and k.split("/")[3] in ("R40", "R11") for k in res)
    assert 0.0 < res["Car/3d/moderate/R40"] <= 100.0
    stdout = capsys.readouterr().out
    assert "Pedestrian" in stdout and "aos" in stdout and "R40/R11" in stdout
    assert not list(out.parent.glob("*.tmp"))


def test_cli_classes_and_frames(tmp_path, capsys):
    gt_dir, det_dir = write_case(tmp_path, skip_det=(2,))
    frames = tmp_path / "val.txt"
    frames.write_text("000000\n000001\n\n")
    out = tmp_path / "r.json"
    assert main([str(gt_dir), str(det_dir), "--frames", str(frames), "--classes", "Car", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {k.split("/")[0] for k in res} == {"Car"} and len(res) == 24


def test_cli_missing_result_file(tmp_path, capsys):
    gt_dir, det_dir = write_case(tmp_path, n_frames=5, skip_det=(1, 3))
    err = run_bad(capsys, [str(gt_dir), str(det_dir)], tmp_path / "r.json", "000001.txt")
    assert "2 of 5" in err


def test_cli_wrong_field_count(tmp_path, capsys):
    bad = " ".join(GT_LINES[0].split()[:14])  # 14 fields
    gt_dir, det_dir = write_case(tmp_path, det_extra=bad)
    run_bad(capsys, [str(gt_dir), str(det_dir)], tmp_path / "r.json", "fields")
    # ground truth must have 15 fields (a result line with score in label_2 is an error too)
    (tmp_path / "b").mkdir()
    gt_dir2, det_dir2 = write_case(tmp_path / "b")
    (gt_dir2 / "000002.txt").write_text(det_line(GT_LINES[0], 0.5) + "\n")
    run_bad(capsys, [str(gt_dir2), str(det_dir2)], tmp_path / "r.json", "000002.txt")


def test_cli_unknown_class(tmp_path, capsys):
    gt_dir, det_dir = write_case(tmp_path, det_extra=det_line(GT_LINES[0].replace("Car", "Bus", 1), 0.4))
    run_bad(capsys, [str(gt_dir), str(det_dir)], tmp_path / "r.json", "Bus")
    run_bad(capsys, [str(gt_dir), str(tmp_path / "det"), "--classes", "Car,Van"], tmp_path / "r.json", "Van")


@pytest.mark.parametrize("which", ["gt_empty", "det_empty", "gt_missing", "det_missing", "frames_empty"])
def test_cli_empty_or_missing_dirs(tmp_path, capsys, which):
    gt_dir, det_dir = write_case(tmp_path)
    frames = []
    if which == "gt_empty":
        for p in gt_dir.iterdir():
            p.unlink()
    elif which == "det_empty":
        for p in det_dir.iterdir():
            p.unlink()
    elif which == "gt_missing":
        gt_dir = tmp_path / "nope"
    elif which == "det_missing":
        det_dir = tmp_path / "nope"
    else:
        (tmp_path / "ids.txt").write_text("\n")
        frames = ["--frames", str(tmp_path / "ids.txt")]
    run_bad(capsys, [str(gt_dir), str(det_dir)] + frames, tmp_path / "r.json", "")
