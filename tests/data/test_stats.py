"""Fitted KITTI constants re-fit from the real labels; generated scenes follow them."""
from __future__ import annotations

import numpy as np
import pytest

from dm3d_exp.data.kitti_stats import CLASSES, FITTED, fit_label_stats
from dm3d_exp.kitti.format import read_label_file


def test_constants_match_a_refit_of_the_kitti_labels(shared_data):
    labels = shared_data / "kitti_train_labels"
    if not labels.is_dir():
        pytest.skip(f"{labels} not available")
    refit = fit_label_stats(labels)
    assert refit["num_frames"] == FITTED["num_frames"] == 7481
    assert refit["class_counts"] == FITTED["class_counts"]
    assert refit["objects_per_frame"] == FITTED["objects_per_frame"]
    assert refit["dontcare_per_frame"] == FITTED["dontcare_per_frame"]
    assert refit["bbox_height_p1"] == pytest.approx(FITTED["bbox_height_p1"], abs=0.01)
    for cls in CLASSES:
        a, b = refit["classes"][cls], FITTED["classes"][cls]
        for key in ("dist_hist", "lateral_depth_hist", "heading_hist"):
            assert a[key] == b[key], (cls, key)
        for key in ("size_mean", "size_std", "occlusion_rates"):
            assert a[key] == pytest.approx(b[key], abs=1e-3), (cls, key)
        assert a["truncation_rate"] == pytest.approx(b["truncation_rate"], abs=1e-3)


def _generated_labels(root, n):
    return [read_label_file(root / "training" / "label_2" / f"{i:06d}.txt") for i in range(n)]


def test_generated_scenes_follow_kitti_statistics(medium_dataset):
    frames = _generated_labels(medium_dataset, 160)
    names = np.concatenate([o.name for o in frames])
    kitti_total = sum(FITTED["class_counts"].values())
    for cls in ("Car", "Pedestrian", "Cyclist", "Van", "DontCare"):
        ours, ref = (names == cls).mean(), FITTED["class_counts"][cls] / kitti_total
        assert abs(ours - ref) < max(0.05, 0.35 * ref), (cls, ours, ref)
    pmf = np.array(FITTED["objects_per_frame"], dtype=float)
    ref_mean = (pmf * np.arange(len(pmf))).sum() / pmf.sum()
    per_frame = np.array([(o.name != "DontCare").sum() for o in frames])
    assert abs(per_frame.mean() - ref_mean) < 0.15 * ref_mean
    assert 0.6 < per_frame.std() / np.sqrt((pmf * (np.arange(len(pmf)) - ref_mean) ** 2).sum() / pmf.sum()) < 1.4
    dc = np.array(FITTED["dontcare_per_frame"], dtype=float)
    dc_mean = (dc * np.arange(len(dc))).sum() / dc.sum()
    assert abs(np.mean([(o.name == "DontCare").sum() for o in frames]) - dc_mean) < 0.35 * dc_mean
    for cls in ("Car", "Pedestrian", "Cyclist"):
        st = FITTED["classes"][cls]
        dims = np.concatenate([o.dimensions[o.name == cls] for o in frames])
        assert len(dims) > 20
        assert np.all(np.abs(dims.mean(0) - st["size_mean"]) < 0.35 * np.array(st["size_std"]) + 0.02), cls
        assert np.all(np.abs(dims.std(0) / st["size_std"] - 1) < 0.4), cls
    cars = [o.select(o.name == "Car") for o in frames]
    dist = np.concatenate([np.hypot(c.location[:, 0], c.location[:, 2]) for c in cars])
    edges = np.array(FITTED["classes"]["Car"]["dist_hist"], dtype=float)
    centres = np.arange(2.5, 100, 5)
    ref_median = centres[np.searchsorted(np.cumsum(edges) / edges.sum(), 0.5)]
    assert abs(np.median(dist) - ref_median) < 5.0
    occ = np.concatenate([c.occluded for c in cars])
    ref_occ = FITTED["classes"]["Car"]["occlusion_rates"]
    assert np.all(np.abs(np.bincount(occ, minlength=3)[:3] / len(occ) - np.array(ref_occ[:3])) < 0.12)
    trunc = np.concatenate([c.truncated for c in cars])
    assert abs((trunc > 0).mean() - FITTED["classes"]["Car"]["truncation_rate"]) < 0.08
