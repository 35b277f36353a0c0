"""Procedural street scenes: road layout, labelled road users and background clutter.

A scene is built in a road frame (s along the gently bending road, u to the left of its centre line,
metres; the sensor at s = u = 0 in its lane) and rotated by a small road yaw into the LiDAR frame
(x forward, y left, z up, origin at the sensor, ground about 1.73 m below). Road users are sampled from
the KITTI-fitted statistics in ``kitti_stats.FITTED`` (objects per frame, class mix, sizes, depth given
lateral offset, headings) and placed in lane, parking-row, sidewalk or crossing slots inside the camera's
field of view, never overlapping each other; parked vehicles mostly line up in rows.
Buildings, walls, hedges, trees and poles are then added where they do not overlap any road user.

Geometry is a list of primitives for the ray caster: vertical oriented boxes and vertical cylinders,
each with an object id (-1 = background), a reflectivity, a porosity (probability that a ray passes
through it: glass, foliage, fences) and a gloss (0 diffuse .. 1 specular: returns weaken with incidence
angle, as on car paint and glass).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calib import IMAGE_WIDTH, LIDAR_HEIGHT_M, kitti_calib, lidar_to_cam
from .kitti_stats import CLASSES, DIST_EDGES, FITTED, HEADING_BINS, LATERAL_EDGES
from .params import SynthParams

# Box columns: cx cy cz hx hy hz yaw obj refl porosity gloss (centre and half sizes, LiDAR frame).
BOX_COLS = 11
# Cylinder columns: cx cy z0 z1 radius obj refl porosity gloss.
CYL_COLS = 9

_VEHICLES = ("Car", "Van", "Truck", "Tram", "Misc")
_MARGIN = 0.03  # object geometry stays this far inside its labelled box (metres)
_ROW_PROB = 0.85  # probability that a parked vehicle joins an existing parking row
_FOV_SLACK = 0.3  # object centres may project this fraction of the image width outside it (truncation)
_DONTCARE_FAR_M = {"Car": (55.0, 95.0), "Pedestrian": (35.0, 70.0), "Cyclist": (45.0, 80.0)}
# Calibrated so that the *labelled* objects per frame (after placement failures, objects left without
# LiDAR points and far objects turning into DontCare) match KITTI's 5.42 / 1.51 per frame.
_OBJECT_OVERSAMPLE = 1.13
_DONTCARE_SCALE = 0.55


@dataclass
class SceneObject:
    """One road user. ``center`` is the bottom centre in the LiDAR frame; ``size`` is (l, w, h)."""

    cls: str
    center: np.ndarray
    size: np.ndarray
    yaw: float
    dontcare: bool


@dataclass
class Ground:
    """Ground surface z = z0 + gx x + gy y + roughness(x, y) in the LiDAR frame."""

    z0: float
    gx: float
    gy: float
    refl: float
    rough_amp: np.ndarray  # (k,) metres
    rough_freq: np.ndarray  # (k, 2) rad/m
    rough_phase: np.ndarray  # (k,)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Plane height (without roughness) under (x, y)."""
        return self.z0 + self.gx * x + self.gy * y

    def roughness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Smooth height perturbation (a few random sinusoids) under (x, y)."""
        arg = np.multiply.outer(x, self.rough_freq[:, 0]) + np.multiply.outer(y, self.rough_freq[:, 1])
        return (np.sin(arg + self.rough_phase) * self.rough_amp).sum(-1)


@dataclass
class Scene:
    """Sampled scene: road users, primitive geometry and the ground."""

    objects: list[SceneObject]
    boxes: np.ndarray  # (nb, BOX_COLS)
    cyls: np.ndarray  # (nc, CYL_COLS)
    ground: Ground


@dataclass
class _Layout:
    kind: str
    road_yaw: float
    curvature: float  # 1/m, the road bends left (> 0) or right as it goes
    y_right: float  # road edge (kerb), u < 0
    y_left: float  # road edge, u > 0
    lanes: list[tuple[float, int]]  # (lane centre u, direction +1 along s / -1)
    park_right: bool
    park_left: bool
    sidewalk: tuple[float, float]  # widths right, left
    buildings: tuple[bool, bool]  # right, left
    setback: tuple[float, float]


class _Geometry:
    """Accumulates primitives in the LiDAR frame."""

    def __init__(self) -> None:
        self.boxes: list[tuple] = []
        self.cyls: list[tuple] = []
        self.gloss = 0.0  # applied to the primitives added next

    def box(self, cx, cy, z0, z1, hx, hy, yaw, obj, refl, porosity=0.0) -> None:
        self.boxes.append((cx, cy, (z0 + z1) / 2, hx, hy, (z1 - z0) / 2, yaw, obj, refl, porosity, self.gloss))

    def cyl(self, cx, cy, z0, z1, r, obj, refl, porosity=0.0) -> None:
        self.cyls.append((cx, cy, z0, z1, r, obj, refl, porosity, self.gloss))

    def part_box(self, o: SceneObject, oid: int, x, y, z0, z1, hx, hy, refl, porosity=0.0) -> None:
        """Box given in the object's frame (x along its heading, y left, z up from its bottom centre)."""
        c, s = np.cos(o.yaw), np.sin(o.yaw)
        self.box(o.center[0] + c * x - s * y, o.center[1] + s * x + c * y, o.center[2] + z0, o.center[2] + z1,
                 hx, hy, o.yaw, oid, refl, porosity)

    def part_cyl(self, o: SceneObject, oid: int, x, y, z0, z1, r, refl, porosity=0.0) -> None:
        c, s = np.cos(o.yaw), np.sin(o.yaw)
        self.cyl(o.center[0] + c * x - s * y, o.center[1] + s * x + c * y, o.center[2] + z0, o.center[2] + z1,
                 r, oid, refl, porosity)


def _hist_sample(rng: np.random.Generator, counts, edges: np.ndarray) -> float:
    p = np.asarray(counts, dtype=float)
    i = rng.choice(len(p), p=p / p.sum())
    return float(rng.uniform(edges[i], edges[i + 1]))


def _sample_layout(rng: np.random.Generator) -> _Layout:
    kind = str(rng.choice(["city", "narrow", "residential", "road"], p=[0.3, 0.15, 0.4, 0.15]))
    extra_same = int(rng.choice([0, 1], p=[0.75, 0.25])) if kind != "narrow" else 0
    n_opp = int(rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
    left_lanes = max(n_opp, 1) if kind != "narrow" else int(rng.random() < 0.5)
    p_park = {"road": 0.15, "narrow": 0.5}.get(kind, 0.75)
    park_right, park_left = bool(rng.random() < p_park), bool(rng.random() < p_park)
    lanes = [(0.0, 1)] + [(-3.5, 1)] * extra_same
    one_way_dir = 1 if rng.random() < 0.5 else -1
    lanes += [(3.5 * (k + 1), -1 if n_opp else one_way_dir) for k in range(left_lanes)]
    y_right = -1.75 - 3.5 * extra_same - (2.3 if park_right else 0.4)
    y_left = 1.75 + 3.5 * left_lanes + (2.3 if park_left else 0.4)
    if kind == "narrow":  # old-town street: walls right behind narrow sidewalks
        sidewalk = (float(rng.uniform(0.8, 2.0)), float(rng.uniform(0.8, 2.0)))
        buildings = (bool(rng.random() < 0.95), bool(rng.random() < 0.95))
        setback = (0.0, 0.0)
    elif kind == "road":
        sidewalk = (float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5)))
        buildings = (bool(rng.random() < 0.15), bool(rng.random() < 0.15))
        setback = (float(rng.uniform(3, 15)), float(rng.uniform(3, 15)))
    elif kind == "city":
        sidewalk = (float(rng.uniform(1.0, 4)), float(rng.uniform(1.0, 4)))
        buildings = (bool(rng.random() < 0.9), bool(rng.random() < 0.9))
        setback = (float(rng.uniform(0, 1.5)), float(rng.uniform(0, 1.5)))
    else:
        sidewalk = (float(rng.uniform(1.5, 3)), float(rng.uniform(1.5, 3)))
        buildings = (bool(rng.random() < 0.75), bool(rng.random() < 0.75))
        setback = (float(rng.uniform(2, 9)), float(rng.uniform(2, 9)))
    return _Layout(kind, float(rng.normal(0, 0.04)), float(rng.normal(0, 0.004)), y_right, y_left, lanes,
                   park_right, park_left, sidewalk, buildings, setback)


def _to_world(lay: _Layout, s: float, u: float) -> tuple[float, float, float]:
    """LiDAR (x, y) of road coordinates (s along the centre line, u to its left) and the road heading there."""
    phi = lay.curvature * s  # heading of the (slowly bending) centre line, relative to its start
    cx, cy = s, 0.5 * lay.curvature * s * s
    rx, ry = cx - u * np.sin(phi), cy + u * np.cos(phi)
    c, sn = np.cos(lay.road_yaw), np.sin(lay.road_yaw)
    return float(c * rx - sn * ry), float(sn * rx + c * ry), float(lay.road_yaw + phi)


def _rect_overlap(a: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Separating-axis test of BEV rectangle ``a`` (cx, cy, half_l, half_w, yaw) against ``rects`` (n, 5)."""
    hit = np.zeros(len(rects), dtype=bool)
    if len(rects) == 0:
        return hit
    near = np.hypot(rects[:, 0] - a[0], rects[:, 1] - a[1]) < np.hypot(a[2], a[3]) + np.hypot(rects[:, 2], rects[:, 3])
    if not near.any():  # bounding circles apart
        return hit
    hit[near] = _sat_overlap(a, rects[near])
    return hit


def _sat_overlap(a: np.ndarray, rects: np.ndarray) -> np.ndarray:
    allr = np.concatenate([a[None], rects])
    ax = np.stack([np.cos(allr[:, 4]), np.sin(allr[:, 4])], 1)  # (n+1, 2) length axes
    ay = np.stack([-ax[:, 1], ax[:, 0]], 1)
    d = rects[:, :2] - a[:2]
    sep = np.zeros(len(rects), dtype=bool)
    for axes in (ax[:1], ay[:1], ax[1:], ay[1:]):  # the 4 candidate axes per pair
        proj_d = np.abs((d * axes).sum(1))
        ra = a[2] * np.abs((axes * ax[0]).sum(1)) + a[3] * np.abs((axes * ay[0]).sum(1))
        rb = rects[:, 2] * np.abs((axes * ax[1:]).sum(1)) + rects[:, 3] * np.abs((axes * ay[1:]).sum(1))
        sep |= proj_d > ra + rb
    return ~sep


def _size(rng: np.random.Generator, cls: str) -> np.ndarray:
    st = FITTED["classes"][cls]
    h, w, l = np.clip(rng.normal(st["size_mean"], st["size_std"]),
                      np.array(st["size_mean"]) - 2 * np.array(st["size_std"]),
                      np.array(st["size_mean"]) + 2 * np.array(st["size_std"]))
    return np.array([max(l, 0.3), max(w, 0.3), max(h, 0.5)])


def _lateral(rng: np.random.Generator, cls: str, yaw_rel: float, lay: _Layout, w: float) -> tuple[float, str]:
    """Lateral road-frame position u and slot name for an object of class ``cls`` heading ``yaw_rel``.

    Slots ``park_right`` / ``park_left`` are the parking rows along the kerbs; everything else is ``free``.
    """
    aligned = abs(np.cos(yaw_rel)) > np.cos(np.radians(35))
    direction = 1 if np.cos(yaw_rel) > 0 else -1
    yr, yl = lay.y_right, lay.y_left
    swr, swl = lay.sidewalk
    if cls in ("Pedestrian", "Person_sitting"):
        r = rng.random()
        if r < 0.8 or cls == "Person_sitting":
            u = yl + rng.uniform(0.3, max(swl, 0.6)) if rng.random() < 0.5 else yr - rng.uniform(0.3, max(swr, 0.6))
        elif r < 0.9:
            u = rng.uniform(yr + 0.5, yl - 0.5)
        else:
            u = yl + swl + rng.uniform(0.5, 6) if rng.random() < 0.5 else yr - swr - rng.uniform(0.5, 6)
        return float(u), "free"
    if cls == "Cyclist":
        if not aligned:
            u = rng.uniform(yr + 0.5, yl - 0.5)
        elif rng.random() < 0.75:
            u = yr + rng.uniform(0.4, 1.2) if direction > 0 else yl - rng.uniform(0.4, 1.2)
        else:
            u = yl + rng.uniform(0.3, max(swl, 0.6)) if rng.random() < 0.5 else yr - rng.uniform(0.3, max(swr, 0.6))
        return float(u), "free"
    # vehicles
    if not aligned:
        if rng.random() < 0.5:
            u = rng.uniform(yr + 1.0, yl - 1.0)
        else:
            u = yl + swl + rng.uniform(1, 12) if rng.random() < 0.5 else yr - swr - rng.uniform(1, 12)
        return float(u), "free"
    lanes = [u for u, d in lay.lanes if d == direction] or [u for u, _ in lay.lanes]
    options = [(0.3, None, "free")]
    if lay.park_right:
        options.append((0.35 if direction > 0 else 0.15, yr + w / 2 + rng.uniform(0.15, 0.4), "park_right"))
    if lay.park_left:
        options.append((0.35 if direction < 0 else 0.15, yl - w / 2 - rng.uniform(0.15, 0.4), "park_left"))
    if cls == "Tram":
        options = [(1.0, None, "free")]
    p = np.array([o[0] for o in options])
    k = rng.choice(len(options), p=p / p.sum())
    if options[k][1] is None:
        return float(lanes[rng.integers(len(lanes))] + rng.normal(0, 0.3)), "free"
    return float(options[k][1]), options[k][2]


def _in_camera_fov(center: np.ndarray, h: float, calib: dict) -> bool:
    cam = lidar_to_cam(np.array([[center[0], center[1], center[2] + h / 2]]), calib)[0]
    if cam[2] < 1.0:
        return False
    u = calib["P2"][0, 0] * cam[0] / cam[2] + calib["P2"][0, 2]
    return -_FOV_SLACK * IMAGE_WIDTH <= u <= (1 + _FOV_SLACK) * IMAGE_WIDTH


def _place_object(rng, cls, lay, ground, rects, rows, calib, dontcare: bool) -> SceneObject | None:
    """Place one road user (appending its footprint to ``rects`` and parking-row entry to ``rows``)."""
    size = _size(rng, cls)
    l, w, h = size
    st = FITTED["classes"][cls]
    edges = np.array(DIST_EDGES)
    lat_edges = np.array(LATERAL_EDGES)
    for _ in range(15):
        ry = _hist_sample(rng, st["heading_hist"], np.linspace(-np.pi, np.pi, HEADING_BINS + 1))
        yaw_rel = -ry - np.pi / 2  # KITTI camera rotation_y -> LiDAR yaw (mmdet3d convention)
        u, slot = _lateral(rng, cls, yaw_rel, lay, w)
        if slot != "free" and rows[slot] and rng.random() < _ROW_PROB:
            s_e, l_e = rows[slot][rng.integers(len(rows[slot]))]  # park next to a parked vehicle
            s = s_e + (1 if rng.random() < 0.7 else -1) * ((l_e + l) / 2 + rng.uniform(0.5, 2.5))
        elif dontcare:
            s = float(rng.uniform(*_DONTCARE_FAR_M[cls]))
        else:
            # KITTI's depth distribution of this class at this lateral offset (camera x = -u)
            row = int(np.clip(np.searchsorted(lat_edges, -u, side="right") - 1, 0, len(lat_edges) - 2))
            depth_counts = st["lateral_depth_hist"][row]
            s = _hist_sample(rng, depth_counts if sum(depth_counts) else st["dist_hist"], edges) + 0.27
        x, y, road_heading = _to_world(lay, s, u)
        center = np.array([x, y, float(ground.height(x, y))])
        if not _in_camera_fov(center, h, calib):
            continue
        yaw = float(np.arctan2(np.sin(yaw_rel + road_heading), np.cos(yaw_rel + road_heading)))
        pad = 0.25 if cls in _VEHICLES else 0.1
        rect = np.array([x, y, l / 2 + pad, w / 2 + pad, yaw])
        if _rect_overlap(rect, np.array(rects).reshape(-1, 5)).any():
            continue
        rects.append(rect)
        if slot != "free":
            rows[slot].append((s, l))
        return SceneObject(cls, center, size, yaw, dontcare)
    return None


def _vehicle_parts(g: _Geometry, o: SceneObject, oid: int, rng: np.random.Generator) -> None:
    l, w, h = o.size - np.array([2 * _MARGIN, 2 * _MARGIN, _MARGIN])
    paint = float(rng.choice([0.04, 0.08, 0.15, 0.3, 0.6], p=[0.25, 0.25, 0.2, 0.15, 0.15]))
    glass, tyre = 0.05, 0.04
    rw = min(0.4, 0.22 * h, 0.12 * l)
    for sx in (-1, 1):  # wheels
        for sy in (-1, 1):
            g.part_box(o, oid, sx * (l / 2 - 0.2 * l), sy * (w / 2 - 0.1), 0.0, 2 * rw, 0.9 * rw, 0.1, tyre)
    if o.cls == "Car":
        g.part_box(o, oid, 0.0, 0.0, 0.6 * rw, 0.56 * h, l / 2, w / 2, paint)
        g.part_box(o, oid, -0.06 * l, 0.0, 0.56 * h, h - 0.05, 0.27 * l, w / 2 - 0.08, glass, 0.75)
        g.part_box(o, oid, -0.08 * l, 0.0, h - 0.05, h, 0.21 * l, w / 2 - 0.12, paint)
    elif o.cls == "Van":
        g.part_box(o, oid, 0.0, 0.0, 0.6 * rw, 0.5 * h, l / 2, w / 2, paint)
        g.part_box(o, oid, -0.1 * l, 0.0, 0.5 * h, h, 0.4 * l, w / 2 - 0.03, paint, 0.15)
        g.part_box(o, oid, 0.32 * l, 0.0, 0.5 * h, 0.85 * h, 0.03 * l, w / 2 - 0.06, glass, 0.8)
    elif o.cls == "Truck":
        cab = min(2.4, 0.3 * l)
        g.part_box(o, oid, l / 2 - cab / 2, 0.0, 0.45 * rw + 0.3, 0.85 * h, cab / 2, w / 2 - 0.05, paint, 0.1)
        g.part_box(o, oid, -cab / 2, 0.0, 0.35 * h, h, (l - cab) / 2 - 0.1, w / 2, paint)
        g.part_box(o, oid, 0.0, 0.0, 1.2 * rw, 0.35 * h, l / 2 - 0.2, w / 2 - 0.25, tyre)
    elif o.cls == "Tram":
        g.part_box(o, oid, 0.0, 0.0, 0.1 * h, 0.4 * h, l / 2, w / 2, paint)
        g.part_box(o, oid, 0.0, 0.0, 0.4 * h, 0.8 * h, l / 2, w / 2, glass, 0.6)
        g.part_box(o, oid, 0.0, 0.0, 0.8 * h, h, l / 2 - 0.3, w / 2 - 0.05, paint)
    else:  # Misc: trailer / container / machinery
        g.part_box(o, oid, 0.0, 0.0, 0.25 * h, h, l / 2, w / 2, paint, float(rng.choice([0.0, 0.3])))


def _person_parts(g: _Geometry, o: SceneObject, oid: int, rng: np.random.Generator) -> None:
    l, w, h = o.size - np.array([2 * _MARGIN, 2 * _MARGIN, _MARGIN])
    cloth, skin = float(rng.uniform(0.08, 0.45)), 0.3
    s = h / 1.76
    leg_r = 0.075 * s
    half_torso_w = min(w / 2, 0.21 * s)
    if o.cls == "Person_sitting":
        for sy in (-1, 1):
            g.part_cyl(o, oid, min(0.3 * l, l / 2 - leg_r), sy * 0.1 * s, 0.0, 0.4 * h, leg_r, cloth)
        g.part_box(o, oid, 0.1 * l, 0.0, 0.35 * h, 0.47 * h, 0.25 * l, half_torso_w, cloth)
        g.part_box(o, oid, -0.2 * l, 0.0, 0.4 * h, 0.82 * h, min(0.14 * s, 0.3 * l), half_torso_w, cloth)
        g.part_cyl(o, oid, -0.2 * l, 0.0, 0.84 * h, h, 0.1 * s, skin)
        return
    stride = rng.uniform(-0.35, 0.35) * (l / 2 - leg_r)
    for sy, sx in ((-1, stride), (1, -stride)):
        g.part_cyl(o, oid, sx, sy * 0.09 * s, 0.0, 0.48 * h, leg_r, cloth)
    g.part_box(o, oid, 0.0, 0.0, 0.47 * h, 0.82 * h, min(0.13 * s, l / 2), half_torso_w, cloth)
    for sy in (-1, 1):  # arms
        g.part_cyl(o, oid, -stride * 0.6, sy * min(w / 2 - 0.05 * s, half_torso_w + 0.05 * s), 0.45 * h, 0.8 * h,
                   0.045 * s, cloth)
    g.part_cyl(o, oid, 0.0, 0.0, 0.85 * h, h, 0.1 * s, skin)


def _cyclist_parts(g: _Geometry, o: SceneObject, oid: int, rng: np.random.Generator) -> None:
    l, w, h = o.size - np.array([2 * _MARGIN, 2 * _MARGIN, _MARGIN])
    metal, cloth, skin = float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.08, 0.45)), 0.3
    s = h / 1.74
    wr = min(0.34, l / 4)
    for sx in (-1, 1):  # wheels as thin discs (boxes)
        g.part_box(o, oid, sx * (l / 2 - wr), 0.0, 0.0, 2 * wr, wr, 0.025, 0.05, 0.3)
    g.part_box(o, oid, 0.0, 0.0, 0.35 * s, 0.8 * s, l / 2 - wr, 0.03, metal)
    for sy in (-1, 1):
        g.part_cyl(o, oid, 0.0, sy * 0.1 * s, 0.45 * s, 0.97 * s, 0.07 * s, cloth)
    g.part_box(o, oid, -0.05 * l, 0.0, 0.95 * s, h - 0.27 * s, 0.16 * s, min(w / 2, 0.19 * s), cloth)
    g.part_box(o, oid, 0.17 * l, 0.0, 1.15 * s, 1.27 * s, 0.14 * l, min(w / 2, 0.2 * s), cloth)
    g.part_cyl(o, oid, -0.02 * l, 0.0, h - 0.24 * s, h, 0.1 * s, skin)


def _background(rng, lay: _Layout, ground: Ground, rects: list, g: _Geometry, max_range: float,
                behind: bool) -> None:
    """Buildings, walls, hedges, trees and poles that do not overlap road users (``rects``)."""
    obj_rects = np.array(rects).reshape(-1, 5)
    s_lo, s_hi = (-max_range if behind else -8.0), max_range

    def place_box(s, u, hs, hu, z0, z1, refl, porosity=0.0, yaw_rel=0.0) -> bool:
        x, y, road_heading = _to_world(lay, s, u)
        yaw = road_heading + yaw_rel
        if _rect_overlap(np.array([x, y, hs + 0.2, hu + 0.2, yaw]), obj_rects).any():
            return False
        zg = float(ground.height(x, y))
        g.box(x, y, zg + z0, zg + z1, hs, hu, yaw, -1, refl, porosity)
        return True

    def place_cyl(s, u, r, z0, z1, refl, porosity=0.0) -> bool:
        x, y, _ = _to_world(lay, s, u)
        if _rect_overlap(np.array([x, y, r + 0.2, r + 0.2, 0.0]), obj_rects).any():
            return False
        zg = float(ground.height(x, y))
        g.cyl(x, y, zg + z0, zg + z1, r, -1, refl, porosity)
        return True

    def tree(s, u) -> None:
        top = rng.uniform(4, 12)
        if place_cyl(s, u, rng.uniform(0.12, 0.3), 0.0, min(3.0, top), float(rng.uniform(0.3, 0.5))):
            place_cyl(s, u, rng.uniform(1.2, 3.5), rng.uniform(2.2, 3.2), top, float(rng.uniform(0.45, 0.75)),
                      float(rng.uniform(0.4, 0.7)))

    for side, sign in ((0, -1), (1, 1)):
        edge = -lay.y_right if side == 0 else lay.y_left
        face = edge + lay.sidewalk[side]
        if lay.buildings[side]:
            s = s_lo + rng.uniform(0, 10)
            while s < s_hi:
                if rng.random() < 0.3:  # gap: alley, driveway or garden
                    s += rng.uniform(3, 15)
                    if rng.random() < 0.5:
                        tree(s - rng.uniform(1, 3), sign * (face + rng.uniform(1, 6)))
                    continue
                length = rng.uniform(8, 35)
                depth = rng.uniform(8, 18)
                height = rng.uniform(4, 10) if lay.kind == "residential" else rng.uniform(4, 20)
                front = face + lay.setback[side] + rng.uniform(0, 1.0)
                place_box(s + length / 2, sign * (front + depth / 2), length / 2, depth / 2, 0.0, height,
                          float(rng.uniform(0.25, 0.7)), float(rng.uniform(0.0, 0.15)))
                if lay.setback[side] > 2 and rng.random() < 0.85:  # front garden: hedge / fence / wall
                    kind = rng.integers(3)
                    hh, refl, por = [(rng.uniform(0.8, 2.0), 0.6, 0.3), (rng.uniform(1.0, 1.8), 0.45, 0.5),
                                     (rng.uniform(0.5, 1.5), 0.4, 0.0)][kind]
                    place_box(s + length / 2, sign * (face + 0.5), length / 2 - 0.5, 0.3, 0.0, hh, refl, por)
                s += length + rng.uniform(0.0, 2.0)
        else:  # open side: fields, bushes, scattered trees, a tree line or a wall in the distance
            for _ in range(int(rng.integers(8, 24))):
                s = rng.uniform(s_lo, s_hi)
                u = sign * (face + rng.uniform(0.5, 30))
                if rng.random() < 0.5:
                    tree(s, u)
                else:
                    place_cyl(s, u, rng.uniform(0.5, 1.8), 0.0, rng.uniform(0.5, 1.8), 0.6, 0.35)
            far = face + rng.uniform(12, 45)
            s = s_lo
            while s < s_hi:
                step = rng.uniform(3, 8)
                if rng.random() < 0.8:
                    tree(s, sign * (far + rng.uniform(-2, 2)))
                if rng.random() < 0.5:  # undergrowth
                    place_cyl(s + step / 2, sign * (far + rng.uniform(-3, 1)), rng.uniform(0.8, 2.0), 0.0,
                              rng.uniform(0.6, 2.0), 0.6, 0.35)
                s += step
        s = s_lo + rng.uniform(0, 20)  # street furniture on the sidewalk
        while s < s_hi:
            u = sign * (edge + rng.uniform(0.3, 0.8))
            if rng.random() < 0.5:
                if place_cyl(s, u, rng.uniform(0.05, 0.14), 0.0, rng.uniform(3, 9), float(rng.uniform(0.3, 0.7))):
                    if rng.random() < 0.4:  # traffic sign
                        place_box(s, u, 0.03, 0.35, 2.0, 2.7, 0.9, 0.0, np.pi / 2)
            elif lay.kind != "city" or rng.random() < 0.4:
                tree(s, sign * (edge + rng.uniform(0.8, 1.5)))
            s += rng.uniform(8, 35)
    for side, sign in ((0, -1), (1, 1)):  # facades of a cross street or a bend, facing the sensor
        if rng.random() < 0.6:
            edge = (-lay.y_right if side == 0 else lay.y_left) + lay.sidewalk[side] + rng.uniform(0, 3)
            depth, width = rng.uniform(8, 15), rng.uniform(15, 40)
            place_box(rng.uniform(35, 75) + depth / 2, sign * (edge + width / 2), depth / 2, width / 2, 0.0,
                      rng.uniform(5, 18), float(rng.uniform(0.25, 0.7)), 0.1)
    if rng.random() < 0.4:  # the street ends at a building or tree line ahead
        s_obj = max([0.0] + [float(np.hypot(r[0], r[1])) + r[2] for r in obj_rects])
        s_far = max(s_obj + 3, rng.uniform(40, 130))
        if s_far < max_range:
            width = lay.y_left - lay.y_right + 40
            if rng.random() < 0.6:
                place_box(s_far + 6, (lay.y_left + lay.y_right) / 2, 6, width / 2, 0.0, rng.uniform(4, 18),
                          float(rng.uniform(0.25, 0.7)), 0.05)
            else:
                for u in np.arange(lay.y_right - 20, lay.y_left + 20, rng.uniform(4, 8)):
                    tree(s_far, u)


def sample_scene(rng: np.random.Generator, params: SynthParams) -> Scene:
    """Sample one street scene (road users first, then background around them)."""
    calib = kitti_calib()
    lay = _sample_layout(rng)
    k = 4
    # The ground of the real KITTI scans rises ~0.8 cm per metre ahead in most frames (sensor pitch;
    # 10th-percentile road height at 4..30 m in ../shared/data/kitti_real_frames), hence the mean gx.
    ground = Ground(z0=-LIDAR_HEIGHT_M, gx=float(np.clip(rng.normal(0.007, 0.012), -0.04, 0.05)),
                    gy=float(np.clip(rng.normal(0, 0.012), -0.04, 0.04)), refl=float(rng.uniform(0.2, 0.32)),
                    rough_amp=rng.uniform(0.005, 0.02, k), rough_freq=rng.normal(0, 0.5, (k, 2)),
                    rough_phase=rng.uniform(0, 2 * np.pi, k))
    counts = np.asarray(FITTED["objects_per_frame"], dtype=float)
    n = int(round(rng.choice(len(counts), p=counts / counts.sum()) * params.object_density * _OBJECT_OVERSAMPLE))
    mix = np.array([FITTED["class_counts"][c] for c in CLASSES], dtype=float)
    classes = rng.choice(CLASSES, size=n, p=mix / mix.sum())
    dc = np.asarray(FITTED["dontcare_per_frame"], dtype=float)
    n_dc = int(round(rng.choice(len(dc), p=dc / dc.sum()) * params.object_density * _DONTCARE_SCALE))
    dc_classes = rng.choice(list(_DONTCARE_FAR_M), size=n_dc, p=[0.6, 0.25, 0.15])
    # big objects first, so that they find room
    order = sorted(range(n), key=lambda i: -np.prod(FITTED["classes"][classes[i]]["size_mean"]))
    rects: list[np.ndarray] = []
    rows: dict[str, list] = {"park_right": [], "park_left": []}
    objects = []
    for i in order:
        o = _place_object(rng, str(classes[i]), lay, ground, rects, rows, calib, dontcare=False)
        if o is not None:
            objects.append(o)
    for cls in dc_classes:
        o = _place_object(rng, str(cls), lay, ground, rects, rows, calib, dontcare=True)
        if o is not None:
            objects.append(o)
    g = _Geometry()
    for oid, o in enumerate(objects):
        if o.cls in _VEHICLES:
            g.gloss = 1.0
            _vehicle_parts(g, o, oid, rng)
            g.gloss = 0.0
        elif o.cls == "Cyclist":
            _cyclist_parts(g, o, oid, rng)
        else:
            _person_parts(g, o, oid, rng)
    _background(rng, lay, ground, rects, g, params.max_range_m, behind=params.azimuth_half_window_deg > 85)
    boxes = np.array(g.boxes, dtype=np.float64).reshape(-1, BOX_COLS)
    cyls = np.array(g.cyls, dtype=np.float64).reshape(-1, CYL_COLS)
    return Scene(objects, boxes, cyls, ground)
