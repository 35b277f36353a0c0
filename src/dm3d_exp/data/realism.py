"""Realism report: point density of synthetic frames against real KITTI frames.

Both sides are compared inside the same crop, the camera-2 image field of view (``image_fov_mask`` with
each frame's own calibration), whatever cloud a frame comes with (full ``velodyne`` scans are cropped,
``velodyne_reduced`` clouds are cropped again). Two curves:

* points per frame per 5 m range bin (range = distance from the sensor), mean over frames;
* points per labelled object (non-DontCare with at least one point inside its 3D box) vs object
  distance, mean per bin. The real reference set is small (~43 objects in 11 frames), so this curve uses
  coarse bins ``OBJECT_BIN_EDGES`` instead of 5 m ones. Objects without any point are left out on both
  sides: the generator labels such objects DontCare, while KITTI has a few of them (2 in the real set).

The acceptance bound is a synthetic/real ratio within [1/1.5, 1.5] in every bin from 5 m to 70 m.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_bytes
from ..kitti.format import KittiObjects, read_calib, read_label_file, read_velodyne
from .calib import image_fov_mask
from .frame import points_in_label_box

RANGE_BIN_EDGES = tuple(float(v) for v in range(0, 85, 5))
OBJECT_BIN_EDGES = (5.0, 15.0, 30.0, 45.0, 70.0)
COMPARED_RANGE = (5.0, 70.0)
MAX_RATIO = 1.5


def frame_density(points: np.ndarray, labels: KittiObjects, calib: dict) -> tuple[np.ndarray, list]:
    """Points per range bin of the camera-FOV crop, and (distance, points in box) per labelled object."""
    pts = points[image_fov_mask(points, calib)]
    hist = np.histogram(np.linalg.norm(pts[:, :3], axis=1), RANGE_BIN_EDGES)[0]
    objs = []
    for i in range(len(labels)):
        if labels.name[i] == "DontCare":
            continue
        n = int(points_in_label_box(pts, labels.location[i], labels.dimensions[i], labels.rotation_y[i], calib).sum())
        objs.append((float(np.hypot(labels.location[i, 0], labels.location[i, 2])), n))
    return hist, objs


def _frames(root: Path, ids: list[str], what: str):
    tr = root / "training"
    for fid in ids:
        cloud = tr / "velodyne_reduced" / f"{fid}.bin"
        if not cloud.exists():
            cloud = tr / "velodyne" / f"{fid}.bin"
        if not cloud.exists():
            raise InputError(f"{tr / 'velodyne_reduced' / (fid + '.bin')}: missing point cloud of {what} frame {fid} "
                             f"(looked in velodyne_reduced/ and velodyne/)")
        labels = read_label_file(tr / "label_2" / f"{fid}.txt")
        yield read_velodyne(cloud), labels, read_calib(tr / "calib" / f"{fid}.txt")


def _frame_ids(root: Path, what: str, max_frames: int | None) -> list[str]:
    calib_dir = root / "training" / "calib"
    if not root.is_dir():
        raise InputError(f"{root}: {what} dataset directory does not exist")
    ids = sorted(p.stem for p in calib_dir.glob("*.txt")) if calib_dir.is_dir() else []
    if not ids:
        raise InputError(f"{root}: no {what} frames found (expected KITTI layout training/calib/*.txt with "
                         f"velodyne or velodyne_reduced, label_2)")
    return ids[:max_frames] if max_frames else ids


def curves_from_frames(frames: Iterable[tuple[np.ndarray, KittiObjects, dict]]) -> dict:
    """Mean points per range bin and mean points per object per distance bin over (points, labels, calib)."""
    hists, objs = [], []
    for pts, labels, calib in frames:
        h, o = frame_density(pts, labels, calib)
        hists.append(h)
        objs += o
    if not hists:
        raise InputError("no frames to measure point densities on")
    d = np.array([o[0] for o in objs]).reshape(-1)
    n = np.array([o[1] for o in objs]).reshape(-1)
    d, n = d[n > 0], n[n > 0]
    per_obj, counts = [], []
    for lo, hi in zip(OBJECT_BIN_EDGES[:-1], OBJECT_BIN_EDGES[1:]):
        m = (d >= lo) & (d < hi)
        per_obj.append(float(n[m].mean()) if m.any() else float("nan"))
        counts.append(int(m.sum()))
    return {"frames": len(hists), "points_per_range_bin": np.mean(hists, 0).tolist(),
            "points_per_object": per_obj, "objects_per_bin": counts}


def density_curves(root: str | Path, what: str = "dataset", max_frames: int | None = None) -> dict:
    """``curves_from_frames`` over the frames of a KITTI-layout root (ids from training/calib/*.txt)."""
    root = Path(root)
    return curves_from_frames(_frames(root, _frame_ids(root, what, max_frames), what))


def compare_curves(synth: dict, real: dict) -> dict:
    """Synthetic/real ratios per bin and whether every compared bin is within [1/MAX_RATIO, MAX_RATIO]."""
    edges = np.array(RANGE_BIN_EDGES)
    sel = (edges[:-1] >= COMPARED_RANGE[0]) & (edges[1:] <= COMPARED_RANGE[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        r_range = np.array(synth["points_per_range_bin"]) / np.array(real["points_per_range_bin"])
        r_obj = np.array(synth["points_per_object"]) / np.array(real["points_per_object"])

    def ok(r):
        return bool(np.all(np.isfinite(r)) and np.all((r >= 1 / MAX_RATIO) & (r <= MAX_RATIO)))

    report = {
        "crop": "camera-2 image field of view (1242x375, each frame's calibration)",
        "range_bin_edges_m": list(RANGE_BIN_EDGES), "object_bin_edges_m": list(OBJECT_BIN_EDGES),
        "compared_range_m": list(COMPARED_RANGE), "max_ratio": MAX_RATIO,
        "synthetic": synth, "real": real,
        "range_ratio": [round(float(v), 3) if np.isfinite(v) else None for v in r_range],
        "object_ratio": [round(float(v), 3) if np.isfinite(v) else None for v in r_obj],
        "range_within_bound": ok(r_range[sel]), "object_within_bound": ok(r_obj),
    }
    report["within_bound"] = report["range_within_bound"] and report["object_within_bound"]
    return report


def realism_report(synth_root: str | Path, real_root: str | Path, out_dir: str | Path | None = None,
                   max_frames: int | None = None) -> dict:
    """Compare a synthetic dataset with real KITTI frames; optionally write ``realism.json`` and ``realism.png``.

    Uses the first ``max_frames`` synthetic frames (all by default). Returns ``compare_curves``' report
    plus both roots.
    """
    real = density_curves(real_root, "real")
    synth = density_curves(synth_root, "synthetic", max_frames)
    report = {"synthetic_root": str(synth_root), "real_root": str(real_root), **compare_curves(synth, real)}
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_bytes(out / "realism.json", (json.dumps(report, indent=1) + "\n").encode())
        _plot(report, out / "realism.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    e = np.array(report["range_bin_edges_m"])
    c = (e[:-1] + e[1:]) / 2
    for key, style in (("real", "o-"), ("synthetic", "s--")):
        axes[0].semilogy(c, np.maximum(report[key]["points_per_range_bin"], 0.1), style, label=key)
    lo, hi = report["compared_range_m"]
    axes[0].axvspan(lo, hi, color="0.92", zorder=0)
    axes[0].set(xlabel="range (m)", ylabel="points per frame per 5 m bin", title="Point density (camera FOV)")
    oe = np.array(report["object_bin_edges_m"])
    oc = (oe[:-1] + oe[1:]) / 2
    for key, style in (("real", "o-"), ("synthetic", "s--")):
        axes[1].semilogy(oc, report[key]["points_per_object"], style, label=key)
    axes[1].set(xlabel="object distance (m), coarse bins", ylabel="mean points in box",
                title="Points per labelled object")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
