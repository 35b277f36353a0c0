"""Scene statistics of the real KITTI object training set, used by the synthetic scene sampler.

``fit_label_stats(label_dir)`` measures them from the 7481 KITTI training ``label_2`` files;
``kitti_label_stats.json`` (``FITTED``) is its output on ``../shared/data/kitti_train_labels`` (KITTI object
benchmark, CC BY-NC-SA 3.0; only these derived statistics are stored here). Regenerate with
``python -m dm3d_exp.data.kitti_stats ../shared/data/kitti_train_labels --write``; tests/data/test_stats.py
re-fits them and checks the stored ones.

Distances are ``hypot(x, z)`` of the label location (camera frame, metres); headings are ``rotation_y``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..kitti.format import read_label_file

CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
DIST_EDGES = tuple(float(v) for v in range(0, 105, 5))  # metres; the last bin also holds > 100 m
HEADING_BINS = 12  # rotation_y histogram over [-pi, pi)
LATERAL_EDGES = tuple(float(v) for v in range(-40, 44, 4))  # camera x (metres, right positive), clipped

# fitted on ../shared/data/kitti_train_labels (7481 files) by fit_label_stats(); regenerate, don't edit
STATS_FILE = Path(__file__).with_name("kitti_label_stats.json")
FITTED = json.loads(STATS_FILE.read_text())


def fit_label_stats(label_dir: str | Path) -> dict:
    """Measure the scene statistics used by the generator from a directory of KITTI ``label_2`` files.

    Returns a dict: ``num_frames``; ``class_counts`` (all types incl. DontCare);
    ``objects_per_frame`` (histogram of non-DontCare objects per frame, index = count);
    ``dontcare_per_frame`` (histogram); per class ``size_mean``/``size_std`` (h, w, l in metres),
    ``dist_hist`` (counts over DIST_EDGES), ``lateral_depth_hist`` (counts over LATERAL_EDGES x DIST_EDGES
    of the camera-frame location x, z; rows = lateral bins), ``heading_hist`` (counts of rotation_y in
    HEADING_BINS bins),
    ``occlusion_rates`` (fractions of occluded = 0, 1, 2, 3), ``truncation_rate`` (fraction with
    truncated > 0), ``truncation_mean``; and ``bbox_height_p1``, the 1st percentile of 2D box heights
    (pixels) of non-DontCare objects.
    """
    files = sorted(Path(label_dir).glob("*.txt"))
    if not files:
        raise InputError(f"{label_dir}: no KITTI label files (*.txt) found")
    objs = [read_label_file(f) for f in files]
    per_frame = np.array([int((o.name != "DontCare").sum()) for o in objs])
    dc_frame = np.array([int((o.name == "DontCare").sum()) for o in objs])
    name = np.concatenate([o.name for o in objs])
    dims = np.concatenate([o.dimensions for o in objs])
    loc = np.concatenate([o.location for o in objs])
    ry = np.concatenate([o.rotation_y for o in objs])
    occ = np.concatenate([o.occluded for o in objs])
    trunc = np.concatenate([o.truncated for o in objs])
    bbox = np.concatenate([o.bbox for o in objs])
    types, counts = np.unique(name, return_counts=True)
    stats: dict = {
        "num_frames": len(files),
        "class_counts": {str(t): int(c) for t, c in zip(types, counts)},
        "objects_per_frame": np.bincount(per_frame).tolist(),
        "dontcare_per_frame": np.bincount(dc_frame).tolist(),
        "bbox_height_p1": round(float(np.percentile((bbox[:, 3] - bbox[:, 1])[name != "DontCare"], 1)), 2),
        "classes": {},
    }
    edges = np.array(DIST_EDGES)
    for cls in CLASSES:
        m = name == cls
        if not m.any():
            continue
        dist = np.minimum(np.hypot(loc[m, 0], loc[m, 2]), edges[-1] - 1e-6)
        stats["classes"][cls] = {
            "size_mean": np.round(dims[m].mean(0), 3).tolist(),
            "size_std": np.round(dims[m].std(0), 3).tolist(),
            "dist_hist": np.histogram(dist, edges)[0].tolist(),
            "lateral_depth_hist": np.histogram2d(
                np.clip(loc[m, 0], LATERAL_EDGES[0], LATERAL_EDGES[-1] - 1e-6),
                np.clip(loc[m, 2], edges[0], edges[-1] - 1e-6), [np.array(LATERAL_EDGES), edges])[0]
            .astype(int).tolist(),
            "heading_hist": np.histogram(ry[m], np.linspace(-np.pi, np.pi, HEADING_BINS + 1))[0].tolist(),
            "occlusion_rates": np.round(np.bincount(occ[m], minlength=4)[:4] / m.sum(), 4).tolist(),
            "truncation_rate": round(float((trunc[m] > 0).mean()), 4),
            "truncation_mean": round(float(trunc[m].mean()), 4),
        }
    return stats


def _main(argv: list[str]) -> int:
    """Print the statistics of LABEL_DIR as JSON; ``--write`` also replaces the stored ``STATS_FILE``."""
    from ..fileio import atomic_write_text

    args = [a for a in argv if a != "--write"]
    if len(args) != 1:
        print("usage: python -m dm3d_exp.data.kitti_stats LABEL_DIR [--write]", file=sys.stderr)
        return 2
    try:
        text = json.dumps(fit_label_stats(args[0]), indent=1) + "\n"
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if "--write" in argv:
        atomic_write_text(STATS_FILE, text)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
