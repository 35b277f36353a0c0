"""KITTI evaluator against the official devkit results (../shared/data/kitti_eval_reference) and
ground-truth-as-detections checks."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dm3d_exp.kitti.eval import (CLASSES, DIFFICULTIES, MAX_OCCLUSION, MAX_TRUNCATION, MIN_HEIGHT, evaluate,
                                 evaluate_dirs)
from dm3d_exp.kitti.format import KittiObjects, read_label_file

REF = Path(__file__).parents[2] / ".." / "shared" / "data" / "kitti_eval_reference"


def _case(name: str) -> Path:
    path = REF / name
    if not (path / "official_ap.json").is_file():
        pytest.skip(f"reference data {path} not available (only on the project's shared data volume)")
    return path


def _assert_matches_official(case: Path):
    official = json.loads((case / "official_ap.json").read_text())
    ours = evaluate_dirs(case / "gt_label_2", case / "det_data")
    assert set(ours) == set(official)
    diffs = {k: abs(ours[k] - v) for k, v in official.items()}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 0.01, f"{worst}: ours {ours[worst]:.4f}, official {official[worst]:.4f}"


def test_case_sparse_matches_official_devkit():
    _assert_matches_official(_case("case_sparse"))


def test_kitti_val_car_matches_official_devkit():
    # 3769 frames, ~5 s on 2 cores
    _assert_matches_official(_case("kitti_val_car"))


def _gt_frames(case: Path) -> list[KittiObjects]:
    return [read_label_file(p, with_score=False) for p in sorted((case / "gt_label_2").glob("*.txt"))]


def _as_detections(frames, rng):
    dets = []
    for g in frames:
        d = g.select(g.name != "DontCare")
        d.score = rng.uniform(0.1, 1.0, len(d))
        dets.append(d)
    return dets


def _n_valid(frames, cls, di):
    n = 0
    for g in frames:
        h = g.bbox[:, 3] - g.bbox[:, 1]
        n += int(((g.name == cls) & (g.occluded <= MAX_OCCLUSION[di]) & (g.truncated <= MAX_TRUNCATION[di])
                  & (h > MIN_HEIGHT[di])).sum())
    return n


def test_case_sparse_ground_truth_as_detections_gives_100():
    gt = _gt_frames(_case("case_sparse"))
    rng = np.random.default_rng(0)
    # The devkit's 41-point AP is capped with fewer than 41 valid boxes per class/difficulty (precision is
    # indexed by threshold number), so tile the 20 frames until every class/difficulty has >= 41.
    reps = max(math.ceil(41 / _n_valid(gt, c, di)) for c in CLASSES for di in range(3))
    tiled = gt * reps
    res = evaluate(tiled, _as_detections(tiled, rng))
    assert len(res) == 72
    assert all(v == pytest.approx(100.0) for v in res.values()), {k: v for k, v in res.items() if v < 99.999}


def test_case_sparse_ground_truth_as_detections_shows_devkit_cap():
    """Untiled: n valid boxes (< 41) give exactly n thresholds -> AP_R40 = (n-1)/40, AP_R11 = ceil(n/4)/11."""
    gt = _gt_frames(_case("case_sparse"))
    res = evaluate(gt, _as_detections(gt, np.random.default_rng(1)))
    for cls in CLASSES:
        for di, diff in enumerate(DIFFICULTIES):
            n = min(_n_valid(gt, cls, di), 41)
            for metric in ("bbox", "bev", "3d", "aos"):
                assert res[f"{cls}/{metric}/{diff}/R40"] == pytest.approx(max(n - 1, 0) / 40 * 100)
                assert res[f"{cls}/{metric}/{diff}/R11"] == pytest.approx(math.ceil(n / 4) / 11 * 100)
