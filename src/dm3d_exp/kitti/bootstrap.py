"""Frame-bootstrap confidence intervals of KITTI mAP (beyond the devkit; for comparing runs honestly).

Resample the evaluated frames with replacement ``B`` times with a fixed seed and recompute the headline
mAP (mean over classes of 3D AP, moderate, R40) on each resample with :func:`dm3d_exp.kitti.eval.evaluate`.
The resamples depend only on the number of frames and the seed, so two models evaluated on the same frames
get the *same* resamples: the difference of their per-resample mAPs is a paired bootstrap of the
difference (:func:`paired_interval`). A difference whose interval contains 0 is not a win.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .eval import evaluate
from .format import KittiObjects

HEADLINE = ("3d", "moderate", "R40")


def headline_map(ap: dict[str, float], classes: Sequence[str]) -> float:
    """Mean over ``classes`` of the ``Class/3d/moderate/R40`` AP (0 for a class without valid detections)."""
    return float(np.mean([ap.get("/".join((c, *HEADLINE)), 0.0) for c in classes]))


def resample_indices(n_frames: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, n_frames)`` frame indices drawn with replacement (numpy PCG64, ``seed``)."""
    return np.random.default_rng(seed).integers(0, n_frames, size=(resamples, n_frames))


def bootstrap_map(gt: Sequence[KittiObjects], dt: Sequence[KittiObjects], classes: Sequence[str],
                  resamples: int = 200, seed: int = 0) -> np.ndarray:
    """Headline mAP of each frame resample (float64, length ``resamples``)."""
    out = np.empty(resamples)
    for b, idx in enumerate(resample_indices(len(gt), resamples, seed)):
        ap = evaluate([gt[i] for i in idx], [dt[i] for i in idx], classes=classes, metrics=("3d",),
                      report_undetected=True)
        out[b] = headline_map(ap, classes)
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` covering ``level`` of the bootstrap values."""
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Interval of mAP(a) - mAP(b) from the same resamples (both from :func:`bootstrap_map`, same seed)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"bootstrap values of shapes {a.shape} and {b.shape}: expected the same resamples")
    return interval(a - b, level)
