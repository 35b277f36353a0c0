"""One synthetic frame: scene sampling, LiDAR scan and KITTI labels (2D boxes, truncation, occlusion)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kitti.format import KittiObjects, parse_label_lines, project_to_image
from .calib import IMAGE_HEIGHT, IMAGE_WIDTH, cam_to_lidar, image_fov_mask, kitti_calib, lidar_to_cam
from .kitti_stats import FITTED
from .lidar import scan
from .params import SynthParams
from .scene import sample_scene

# Occlusion level from the fraction of an object's rays hidden by nearer geometry (ideal scan):
# < 0.2 -> 0 (fully visible), < 0.6 -> 1 (partly occluded), else 2 (largely occluded); thresholds chosen
# so that the generated Car occlusion rates approach KITTI's (0.47, 0.28, 0.21).
OCCLUSION_THRESHOLDS = (0.1, 0.5)
# Labelled objects whose 2D box is lower than KITTI's 1st percentile become DontCare.
MIN_BOX_HEIGHT_PX = FITTED["bbox_height_p1"]
_NEAR_Z = 0.1


@dataclass
class Frame:
    """A generated frame. ``labels`` rows map to scene objects through ``label_obj`` (-1: none)."""

    index: int
    points: np.ndarray  # (n, 4) float32: the scanned azimuth window
    fov: np.ndarray  # (n,) bool: point inside the camera image (velodyne_reduced)
    point_obj: np.ndarray  # (n,) scene object id of each point, -1 background
    labels: KittiObjects
    label_obj: np.ndarray
    calib: dict[str, np.ndarray]


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The frame's own random generator: depends only on (seed, index), so frames are independent."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def box_corners_cam(loc: np.ndarray, dims_hwl: np.ndarray, ry: float) -> np.ndarray:
    """(8, 3) corners of a KITTI camera-frame box (location = bottom centre, dims = h, w, l)."""
    h, w, l = dims_hwl
    x = np.array([l, l, -l, -l, l, l, -l, -l]) / 2
    y = np.array([0, 0, 0, 0, -h, -h, -h, -h], dtype=float)
    z = np.array([w, -w, -w, w, w, -w, -w, w]) / 2
    c, s = np.cos(ry), np.sin(ry)
    return np.stack([c * x + s * z + loc[0], y + loc[1], -s * x + c * z + loc[2]], 1)


_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def project_box_2d(corners: np.ndarray, P2: np.ndarray, width: int = IMAGE_WIDTH,
                   height: int = IMAGE_HEIGHT) -> tuple[np.ndarray, float] | None:
    """Image box (x1, y1, x2, y2) of a 3D box and its truncation, or None when it is not in the image.

    The box is clipped at the near plane z = 0.1 m (corners behind it are replaced by the edge
    intersections), projected with P2 and clipped to ``[0, width-1] x [0, height-1]``; truncation is the
    fraction of the unclipped 2D box area outside the image.
    """
    z = corners[:, 2]
    pts = [corners[z >= _NEAR_Z]]
    for a, b in _EDGES:
        if (z[a] >= _NEAR_Z) != (z[b] >= _NEAR_Z):
            f = (_NEAR_Z - z[a]) / (z[b] - z[a])
            pts.append((corners[a] + f * (corners[b] - corners[a]))[None])
    pts = np.concatenate(pts)
    if len(pts) == 0:
        return None
    uv = project_to_image(pts, P2)
    full = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
    box = np.array([np.clip(full[0], 0, width - 1), np.clip(full[1], 0, height - 1),
                    np.clip(full[2], 0, width - 1), np.clip(full[3], 0, height - 1)])
    area = (box[2] - box[0]) * (box[3] - box[1])
    if area <= 0:
        return None
    return box, float(1.0 - area / ((full[2] - full[0]) * (full[3] - full[1])))


def points_in_label_box(points: np.ndarray, loc: np.ndarray, dims_hwl: np.ndarray, ry: float,
                        calib: dict[str, np.ndarray]) -> np.ndarray:
    """Mask of LiDAR points inside a KITTI label box (mmdet3d convention: LiDAR yaw = -ry - pi/2)."""
    h, w, l = dims_hwl
    c = cam_to_lidar(np.asarray(loc, dtype=float)[None], calib)[0]
    yaw = -ry - np.pi / 2
    d = points[:, :3] - c
    cs, sn = np.cos(yaw), np.sin(yaw)
    lx = cs * d[:, 0] + sn * d[:, 1]
    ly = -sn * d[:, 0] + cs * d[:, 1]
    return (np.abs(lx) <= l / 2) & (np.abs(ly) <= w / 2) & (d[:, 2] >= 0) & (d[:, 2] <= h)


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


def generate_frame(params: SynthParams, index: int) -> Frame:
    """Generate frame ``index`` of the dataset described by ``params`` (deterministic)."""
    rng = frame_rng(params.seed, index)
    calib = kitti_calib()
    scene = sample_scene(rng, params)
    sc = scan(scene, params, rng)
    fov = image_fov_mask(sc.points, calib)
    reduced = sc.points[fov]
    lines, line_obj, dc_lines, dc_obj = [], [], [], []
    for oid, o in enumerate(scene.objects):
        l, w, h = o.size
        loc = np.round(lidar_to_cam(o.center[None], calib)[0], 2)
        dims = np.round(np.array([h, w, l]), 2)
        ry = round(_wrap(-o.yaw - np.pi / 2), 2)
        proj = project_box_2d(box_corners_cam(loc, dims, ry), calib["P2"])
        if proj is None:
            continue
        box, trunc = proj
        box = np.round(box, 2)
        npts = int(points_in_label_box(reduced, loc, dims, ry, calib).sum())
        if o.dontcare or npts == 0 or box[3] - box[1] < MIN_BOX_HEIGHT_PX or trunc > 0.95:
            dc_lines.append(f"DontCare -1 -1 -10 {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} "
                            "-1 -1 -1 -1000 -1000 -1000 -10")
            dc_obj.append(oid)
            continue
        hidden = 1.0 - sc.visible_rays[oid] / max(sc.total_rays[oid], 1)
        occ = int(np.searchsorted(OCCLUSION_THRESHOLDS, hidden, side="right"))
        alpha = _wrap(ry - np.arctan2(loc[0], loc[2]))
        lines.append(f"{o.cls} {trunc:.2f} {occ} {alpha:.2f} {box[0]:.2f} {box[1]:.2f} {box[2]:.2f} {box[3]:.2f} "
                     f"{dims[0]:.2f} {dims[1]:.2f} {dims[2]:.2f} {loc[0]:.2f} {loc[1]:.2f} {loc[2]:.2f} {ry:.2f}")
        line_obj.append(oid)
    labels = parse_label_lines(lines + dc_lines, f"<synthetic frame {index}>")
    return Frame(index, sc.points, fov, sc.obj, labels, np.array(line_obj + dc_obj, dtype=np.int64), calib)
