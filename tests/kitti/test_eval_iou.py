"""Exact rotated-box overlaps (dm3d_exp.kitti.iou) against independent computations."""
import math

import numpy as np
import pytest

from dm3d_exp.kitti.iou import (bev_box_overlap, bev_corners, bev_iou_matrix, box3d_iou_matrix, box3d_overlap,
                                convex_polygon_intersection_area, image_box_overlap)


def random_bev(rng, n, spread=3.0):
    return np.c_[rng.uniform(-spread, spread, (n, 2)), rng.uniform(0.3, 5.0, (n, 2)), rng.uniform(-4, 4, n)]


def _inside(p, a, b):
    """p left of (or on) the directed edge a->b."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= -1e-12


def _ccw(poly):
    area = sum(poly[i][0] * poly[(i + 1) % 4][1] - poly[(i + 1) % 4][0] * poly[i][1] for i in range(4))
    return poly if area > 0 else poly[::-1]


def reference_intersection_area(p, q):
    """Independent exact algorithm: vertices of each polygon inside the other plus all edge-edge crossings,
    sorted by angle about their centroid, shoelace area (plain Python)."""
    p, q = _ccw([tuple(v) for v in p]), _ccw([tuple(v) for v in q])
    pts = [v for v in p if all(_inside(v, q[i], q[(i + 1) % 4]) for i in range(4))]
    pts += [v for v in q if all(_inside(v, p[i], p[(i + 1) % 4]) for i in range(4))]
    for i in range(4):
        a, b = p[i], p[(i + 1) % 4]
        for j in range(4):
            c, d = q[j], q[(j + 1) % 4]
            den = (b[0] - a[0]) * (d[1] - c[1]) - (b[1] - a[1]) * (d[0] - c[0])
            if abs(den) < 1e-15:
                continue
            t = ((c[0] - a[0]) * (d[1] - c[1]) - (c[1] - a[1]) * (d[0] - c[0])) / den
            u = ((c[0] - a[0]) * (b[1] - a[1]) - (c[1] - a[1]) * (b[0] - a[0])) / den
            if 0 <= t <= 1 and 0 <= u <= 1:
                pts.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    if len(pts) < 3:
        return 0.0
    cx = sum(x for x, _ in pts) / len(pts)
    cy = sum(y for _, y in pts) / len(pts)
    pts.sort(key=lambda v: math.atan2(v[1] - cy, v[0] - cx))
    return 0.5 * abs(sum(pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0] * pts[i][1]
                         for i in range(len(pts))))


def grid_intersection_area(p, q, n=1500):
    """Brute force: fraction of a fine grid over the bounding box of p that lies in both polygons."""
    p, q = _ccw([tuple(v) for v in p]), _ccw([tuple(v) for v in q])
    lo, hi = np.min(p, axis=0), np.max(p, axis=0)
    xs = lo[0] + (np.arange(n) + 0.5) * (hi[0] - lo[0]) / n
    ys = lo[1] + (np.arange(n) + 0.5) * (hi[1] - lo[1]) / n
    X, Y = np.meshgrid(xs, ys)
    inside = np.ones_like(X, dtype=bool)
    for poly in (p, q):
        for i in range(4):
            a, b = poly[i], poly[(i + 1) % 4]
            inside &= (b[0] - a[0]) * (Y - a[1]) - (b[1] - a[1]) * (X - a[0]) >= 0
    return inside.mean() * (hi[0] - lo[0]) * (hi[1] - lo[1])


def test_identical_rotated_boxes_have_iou_one():
    rng = np.random.default_rng(0)
    b = random_bev(rng, 2000)
    b[:200, 4] = rng.integers(-4, 5, 200) * np.pi / 2  # exact multiples of 90 degrees too
    np.testing.assert_allclose(bev_box_overlap(b, b), 1.0, atol=1e-9)
    b7 = np.c_[b[:, 0], rng.uniform(0, 2, len(b)), b[:, 1], rng.uniform(0.5, 3, len(b)), b[:, 3], b[:, 2], b[:, 4]]
    np.testing.assert_allclose(box3d_overlap(b7, b7), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.diag(bev_iou_matrix(b[:50], b[:50])), 1.0, atol=1e-9)


def test_intersection_area_matches_independent_exact_algorithm():
    rng = np.random.default_rng(1)
    a, b = random_bev(rng, 600), random_bev(rng, 600)
    pa, pb = bev_corners(*a.T), bev_corners(*b.T)
    ours = convex_polygon_intersection_area(pa, pb)
    ref = np.array([reference_intersection_area(x, y) for x, y in zip(pa, pb)])
    assert (ref > 0).sum() > 200 and (ref == 0).sum() > 20  # both overlapping and disjoint pairs
    np.testing.assert_allclose(ours, ref, atol=1e-9, rtol=1e-9)
    # symmetric in its arguments
    np.testing.assert_allclose(convex_polygon_intersection_area(pb, pa), ours, atol=1e-9)


def test_intersection_area_matches_brute_force_grid():
    rng = np.random.default_rng(2)
    a, b = random_bev(rng, 12, spread=1.5), random_bev(rng, 12, spread=1.5)
    pa, pb = bev_corners(*a.T), bev_corners(*b.T)
    ours = convex_polygon_intersection_area(pa, pb)
    grid = np.array([grid_intersection_area(x, y) for x, y in zip(pa, pb)])
    area_a = a[:, 2] * a[:, 3]
    np.testing.assert_allclose(ours / area_a, grid / area_a, atol=5e-3)


def test_special_configurations():
    def iou(a, b):
        return float(bev_box_overlap(np.array([a], float), np.array([b], float))[0])

    assert iou([0, 0, 4, 2, 0], [0, 0, 4, 2, np.pi]) == pytest.approx(1.0)  # same box, heading flipped
    assert iou([0, 0, 4, 2, 0], [0, 0, 2, 4, np.pi / 2]) == pytest.approx(1.0)  # l/w swapped + 90 deg
    assert iou([0, 0, 4, 2, 0], [0, 0, 4, 2, np.pi / 2]) == pytest.approx(4 / 12)  # cross: inter 2x2
    assert iou([0, 0, 4, 2, 0], [4, 0, 4, 2, 0]) == 0.0  # touching edges
    assert iou([0, 0, 4, 2, 0], [10, 10, 4, 2, 0.3]) == 0.0
    assert iou([0, 0, 4, 2, 0], [0, 0, 2, 1, 0.3]) == pytest.approx(2 / 8)  # contained
    assert iou([0, 0, 4, 2, 0], [1, 0, 4, 2, 0]) == pytest.approx(6 / 10)  # shift along x by 1
    # devkit toPolygon convention: ry = pi/2 puts the length along camera z
    c = bev_corners([0.0], [0.0], [4.0], [2.0], [np.pi / 2])[0]
    np.testing.assert_allclose(np.abs(c).max(axis=0), [1.0, 2.0], atol=1e-12)


def test_box3d_overlap_uses_camera_y_down_extent():
    # x y z h w l ry; both boxes 2x2 footprint, heights [y-h, y]
    a = np.array([[0.0, 2.0, 0.0, 2.0, 2.0, 2.0, 0.0]])  # y in [0, 2]
    b = np.array([[1.0, 3.0, 0.0, 2.0, 2.0, 2.0, 0.0]])  # y in [1, 3], shifted 1 in x
    inter = 1 * 2 * 1  # x overlap 1, z overlap 2, y overlap 1
    assert box3d_overlap(a, b)[0] == pytest.approx(inter / (8 + 8 - inter))
    assert box3d_overlap(a, b, criterion=0)[0] == pytest.approx(inter / 8)
    c = a.copy()
    c[0, 1] = 4.5  # y in [2.5, 4.5]: no vertical overlap
    assert box3d_overlap(a, c)[0] == 0.0
    rng = np.random.default_rng(3)
    m = box3d_iou_matrix(np.c_[rng.uniform(-2, 2, (5, 3)), rng.uniform(1, 3, (5, 3)), rng.uniform(-3, 3, 5)],
                         np.c_[rng.uniform(-2, 2, (4, 3)), rng.uniform(1, 3, (4, 3)), rng.uniform(-3, 3, 4)])
    assert m.shape == (5, 4) and ((m >= 0) & (m <= 1)).all()


def test_image_box_overlap():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [10, 0, 20, 10], [2, 2, 4, 4]], float)
    np.testing.assert_allclose(image_box_overlap(a, b), [50 / 150, 0.0, 4 / 100])
    np.testing.assert_allclose(image_box_overlap(a, b, criterion=0), [0.5, 0.0, 0.04])
    np.testing.assert_allclose(image_box_overlap(a, b, criterion=1), [0.5, 0.0, 1.0])


def test_matches_shapely_when_available():
    shapely = pytest.importorskip("shapely")
    rng = np.random.default_rng(4)
    a, b = random_bev(rng, 300), random_bev(rng, 300)
    pa, pb = bev_corners(*a.T), bev_corners(*b.T)
    ref = shapely.area(shapely.intersection(shapely.polygons(pa), shapely.polygons(pb)))
    np.testing.assert_allclose(convex_polygon_intersection_area(pa, pb), ref, atol=1e-9)
