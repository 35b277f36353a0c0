"""Exact box overlaps used by the KITTI evaluator (`dm3d_exp.kitti.eval`), vectorised with numpy.

Semantics follow the official devkit ``cpp/evaluate_object.cpp``:

* ``imageBoxOverlap`` — axis-aligned 2D boxes ``x1 y1 x2 y2``; 0 when the intersection has non-positive
  width or height; ``criterion`` -1 = IoU, 0 = intersection / area(a), 1 = intersection / area(b).
* ``toPolygon`` / ``groundBoxOverlap`` — bird's-eye-view rectangle on the camera ground plane (x, z) with
  corners ``R(ry) @ (±l/2, ±w/2) + (x, z)``, ``R = [[cos, sin], [-sin, cos]]``; overlap from the exact
  polygon intersection (boost::geometry there, convex Sutherland-Hodgman clipping here).
* ``box3DOverlap`` — BEV intersection area times the vertical overlap of ``[y - h, y]`` (camera y points
  down, y is the bottom of the box) over ``vol_det + vol_gt - inter_vol`` (criterion 0: over ``vol_det``).

All pair functions are element-wise: row i of ``a`` is compared with row i of ``b``. Unlike the widely
copied numba ``rotate_iou`` port (second.pytorch / OpenPCDet / mmdet3d), identical rotated boxes give
IoU 1 (up to rounding).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "image_box_overlap", "bev_corners", "convex_polygon_intersection_area", "bev_box_overlap",
    "box3d_overlap", "bev_iou_matrix", "box3d_iou_matrix",
]


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 or the result is not finite (devkit: NaN never passes `> min_overlap`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(num, dtype=np.float64) / den
    return np.where(np.isfinite(out), out, 0.0)


def image_box_overlap(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Element-wise ``imageBoxOverlap(a, b, criterion)`` of (n, 4) ``x1 y1 x2 y2`` boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    valid = (w > 0) & (h > 0)
    inter = np.where(valid, w * h, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if criterion == -1:
        den = area_a + area_b - inter
    elif criterion == 0:
        den = area_a
    elif criterion == 1:
        den = area_b
    else:
        raise ValueError(f"criterion must be -1, 0 or 1, got {criterion}")
    return np.where(valid, _safe_div(inter, den), 0.0)


def bev_corners(x: np.ndarray, z: np.ndarray, l: np.ndarray, w: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """(n, 4, 2) ground-plane (x, z) corners exactly as the devkit's ``toPolygon`` builds them."""
    x, z, l, w, ry = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, z, l, w, ry))
    c, s = np.cos(ry), np.sin(ry)
    dx = np.stack([l, l, -l, -l], axis=1) / 2.0
    dz = np.stack([w, -w, -w, w], axis=1) / 2.0
    px = c[:, None] * dx + s[:, None] * dz + x[:, None]
    pz = -s[:, None] * dx + c[:, None] * dz + z[:, None]
    return np.stack([px, pz], axis=2)


def _signed_area(poly: np.ndarray) -> np.ndarray:
    x, y = poly[..., 0], poly[..., 1]
    return 0.5 * (x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(-1)


def convex_polygon_intersection_area(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact area of ``p[i] ∩ q[i]`` for convex polygons p (n, kp, 2) and q (n, kq, 2), either orientation.

    Sutherland-Hodgman clipping of p by the kq half-planes of q, vectorised over n; points on a clip line
    count as inside, so coincident edges (identical boxes) are kept once and the area is exact.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n, kp = p.shape[:2]
    kq = q.shape[1]
    if n == 0:
        return np.zeros(0)
    # orient both counter-clockwise (positive signed area) so "inside" is the left side of each edge
    p = np.where((_signed_area(p) < 0)[:, None, None], p[:, ::-1], p)
    q = np.where((_signed_area(q) < 0)[:, None, None], q[:, ::-1], q)
    m = kp + kq  # a convex kp-gon clipped by kq half-planes has at most kp + kq vertices
    verts = np.zeros((n, m, 2))
    verts[:, :kp] = p
    count = np.full(n, kp)
    slot = np.arange(m)[None, :]
    for e in range(kq):
        a = q[:, e]
        d = q[:, (e + 1) % kq] - a
        side = d[:, None, 0] * (verts[..., 1] - a[:, None, 1]) - d[:, None, 1] * (verts[..., 0] - a[:, None, 0])
        valid = slot < count[:, None]
        nxt = np.where(slot + 1 < count[:, None], slot + 1, 0)
        verts_n = np.take_along_axis(verts, nxt[..., None], axis=1)
        side_n = np.take_along_axis(side, nxt, axis=1)
        inside, inside_n = side >= 0, side_n >= 0
        emit_cur = valid & inside
        emit_cross = valid & (inside != inside_n)
        t = side / np.where(emit_cross, side - side_n, 1.0)
        cross = verts + t[..., None] * (verts_n - verts)
        cand = np.stack([verts, cross], axis=2).reshape(n, 2 * m, 2)
        keep = np.stack([emit_cur, emit_cross], axis=2).reshape(n, 2 * m)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :m]
        verts = np.take_along_axis(cand, order[..., None], axis=1)
        count = np.minimum(keep.sum(1), m)
    valid = slot < count[:, None]
    nxt = np.where(slot + 1 < count[:, None], slot + 1, 0)
    verts_n = np.take_along_axis(verts, nxt[..., None], axis=1)
    cr = verts[..., 0] * verts_n[..., 1] - verts_n[..., 0] * verts[..., 1]
    area = 0.5 * np.where(valid, cr, 0.0).sum(1)
    return np.where(count >= 3, np.maximum(area, 0.0), 0.0)


def _as_boxes(a: np.ndarray, width: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, width)


def bev_box_overlap(d: np.ndarray, g: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Element-wise ``groundBoxOverlap(d, g, criterion)`` of (n, 5) ``x z l w ry`` boxes.

    -1: intersection / union area, 0: intersection / area(d), 1: intersection / area(g).
    """
    d, g = _as_boxes(d, 5), _as_boxes(g, 5)
    inter = convex_polygon_intersection_area(bev_corners(*d.T), bev_corners(*g.T))
    area_d = np.abs(d[:, 2] * d[:, 3])
    area_g = np.abs(g[:, 2] * g[:, 3])
    den = {-1: area_d + area_g - inter, 0: area_d, 1: area_g}[criterion]
    return _safe_div(inter, den)


def box3d_overlap(d: np.ndarray, g: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Element-wise ``box3DOverlap(d, g, criterion)`` of (n, 7) ``x y z h w l ry`` boxes (KITTI camera frame).

    The vertical extent of a box is ``[y - h, y]``; -1: IoU by volume, 0: over vol(d), 1: over vol(g).
    """
    d, g = _as_boxes(d, 7), _as_boxes(g, 7)
    inter = convex_polygon_intersection_area(bev_corners(d[:, 0], d[:, 2], d[:, 5], d[:, 4], d[:, 6]),
                                             bev_corners(g[:, 0], g[:, 2], g[:, 5], g[:, 4], g[:, 6]))
    ymax = np.minimum(d[:, 1], g[:, 1])
    ymin = np.maximum(d[:, 1] - d[:, 3], g[:, 1] - g[:, 3])
    inter_vol = inter * np.maximum(0.0, ymax - ymin)
    vol_d = d[:, 3] * d[:, 4] * d[:, 5]
    vol_g = g[:, 3] * g[:, 4] * g[:, 5]
    den = {-1: vol_d + vol_g - inter_vol, 0: vol_d, 1: vol_g}[criterion]
    return _safe_div(inter_vol, den)


def _pairwise(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ia, ib = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    return fn(a[ia.ravel()], b[ib.ravel()]).reshape(len(a), len(b))


def bev_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) BEV IoU of ``x z l w ry`` boxes."""
    return _pairwise(bev_box_overlap, _as_boxes(a, 5), _as_boxes(b, 5))


def box3d_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) 3D IoU of ``x y z h w l ry`` boxes."""
    return _pairwise(box3d_overlap, _as_boxes(a, 7), _as_boxes(b, 7))
