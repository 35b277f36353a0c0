"""Frame-bootstrap intervals of KITTI mAP (dm3d_exp.kitti.bootstrap) against direct recomputation."""
import numpy as np
import pytest

from dm3d_exp.kitti.bootstrap import (bootstrap_map, headline_map, interval, paired_interval,
                                      resample_indices)
from dm3d_exp.kitti.eval import evaluate
from test_eval_semantics import gt_as_detections, random_scene

CLASSES = ("Car", "Pedestrian", "Cyclist")


def _half_detected(gt, rng):
    """Perfect detections in some frames, every object missed in the others: mAP varies with the resample."""
    dets = gt_as_detections(gt, rng)
    return [d if i % 3 else d.select(np.zeros(len(d), bool)) for i, d in enumerate(dets)]


def test_each_value_is_the_map_of_its_resample():
    rng = np.random.default_rng(1)
    gt = random_scene(rng, n_frames=12)
    dt = _half_detected(gt, rng)
    values = bootstrap_map(gt, dt, CLASSES, resamples=5, seed=3)
    for v, idx in zip(values, resample_indices(len(gt), 5, seed=3)):
        ap = evaluate([gt[i] for i in idx], [dt[i] for i in idx], classes=CLASSES)
        assert v == pytest.approx(headline_map(ap, CLASSES))
    assert np.ptp(values) > 1.0  # the resamples really differ
    np.testing.assert_array_equal(values, bootstrap_map(gt, dt, CLASSES, resamples=5, seed=3))  # seeded


def test_interval_covers_the_point_estimate_and_paired_difference_with_itself_is_zero():
    rng = np.random.default_rng(2)
    gt = random_scene(rng, n_frames=45)  # >= 40 boxes per class: the devkit's 41 recall points all reachable
    dt = _half_detected(gt, rng)
    values = bootstrap_map(gt, dt, CLASSES, resamples=60)
    low, high = interval(values)
    point = headline_map(evaluate(gt, dt, classes=CLASSES), CLASSES)
    assert low < point < high
    assert paired_interval(values, values) == (0.0, 0.0)
    perfect = bootstrap_map(gt, gt_as_detections(gt, rng), CLASSES, resamples=60)
    assert np.allclose(perfect, 100.0, atol=3.0) and np.all(perfect >= values)
    d_low, d_high = paired_interval(perfect, values)
    assert 0 < d_low <= d_high  # the perfect model is better on every resample
    with pytest.raises(ValueError, match="same resamples"):
        paired_interval(values, values[:10])
