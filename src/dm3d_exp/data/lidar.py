"""Simulated 64-beam spinning LiDAR (HDL-64E-like) with vectorised analytic ray casting.

Rays form a (64 beams x azimuth columns) grid. Each primitive's angular footprint (azimuth sector of its
bounding circle, elevation band of its height range) selects the candidate rays it can hit, so only
those (ray, primitive) pairs are intersected: ray/oriented-box by the slab method, ray/vertical-cylinder
by the quadratic plus cap planes, and every ray with the ground plane. The nearest hit per ray wins;
porous primitives (glass, foliage, fences) let a sampled fraction of rays pass. A return is then kept
with a probability falling with range and reflectivity (plus a uniform dropout), its range gets
Gaussian noise and its reflectance is the surface reflectivity with KITTI's range falloff plus noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import SynthParams
from .scene import Scene

# Beam elevations fitted to the real KITTI HDL-64E scans in ../shared/data/kitti_real_frames (median
# elevation of each of the 64 rings in frames 000000 and 000002): upper block of 32 beams from +2.84 deg
# every 0.334 deg, lower block of 32 beams from -8.12 deg every 0.498 deg (HDL-64E: 1/3 and 1/2 deg).
UPPER_TOP_DEG, UPPER_STEP_DEG = 2.84, 0.334
LOWER_TOP_DEG, LOWER_STEP_DEG = -8.12, 0.498
# A return is kept with probability (1 - dropout) * (1 - exp(-signal)),
#   signal = refl * f * (REF_RANGE_M / r) ** RANGE_EXPONENT / SIGNAL_SCALE,
#   f = 1 - gloss + gloss * cos(incidence) ** GLOSS_EXPONENT,
# so dark, distant and glossy surfaces seen at grazing angles drop out. The steep empirical range law and the
# constants are calibrated so that points per range bin and points per object vs distance match the real
# KITTI frames in ../shared/data/kitti_real_frames (see realism.py; ratios in the realism report).
REF_RANGE_M = 50.0
SIGNAL_SCALE = 0.2
RANGE_EXPONENT = 4.0
GLOSS_EXPONENT = 3.0
# KITTI reflectance is not range-compensated: road returns read ~0.27 up to ~20 m and fall about as
# (20 m / r)^2 beyond (0.15 at 30 m, 0.05 at 40 m in ../shared/data/kitti_real_frames).
INTENSITY_RANGE_M = 20.0
_MIN_T = 0.5  # returns closer than this are not reported


def beam_elevations() -> np.ndarray:
    """The 64 beam elevation angles in radians, from the top beam down."""
    k = np.arange(32)
    return np.radians(np.concatenate([UPPER_TOP_DEG - UPPER_STEP_DEG * k, LOWER_TOP_DEG - LOWER_STEP_DEG * k]))


def azimuths(params: SynthParams) -> np.ndarray:
    """Azimuth of each firing column in radians (ascending, symmetric about the forward axis)."""
    half = np.radians(params.azimuth_half_window_deg)
    step = np.radians(params.azimuth_step_deg)
    n = int(np.floor(2 * half / step + 1e-9))
    if params.azimuth_half_window_deg >= 180.0:
        return -np.pi + step * np.arange(int(round(2 * np.pi / step)))
    return -half + step * (np.arange(n + 1))


@dataclass
class Scan:
    """Result of one simulated revolution (points in firing order: beam-major, then azimuth)."""

    points: np.ndarray  # (n, 4) float32 x y z reflectance
    obj: np.ndarray  # (n,) object id hit by each point (-1 background or ground)
    visible_rays: np.ndarray  # (num_objects,) rays whose nearest surface is the object (ideal sensor)
    total_rays: np.ndarray  # (num_objects,) rays that hit the object's geometry at all


def _pairs(lo_r, hi_r, lo_c, hi_c, ncols, wrap):
    """Expand per-primitive ray-grid rectangles into (primitive, ray) index pairs."""
    nr = np.maximum(hi_r - lo_r, 0)
    nc = np.maximum(hi_c - lo_c, 0)
    cnt = nr * nc
    total = int(cnt.sum())
    prim = np.repeat(np.arange(len(cnt)), cnt)
    start = np.cumsum(cnt) - cnt
    j = np.arange(total) - start[prim]
    width = nc[prim]
    row = lo_r[prim] + j // np.maximum(width, 1)
    col = lo_c[prim] + j % np.maximum(width, 1)
    if wrap:
        col %= ncols
    return prim, row * ncols + col


def _footprint(cx, cy, z0, z1, radius, elev_asc, az, wrap):
    """Ray-grid rectangle (beam rows, azimuth columns) that can see a vertical solid."""
    nbeams = len(elev_asc)
    dist = np.hypot(cx, cy)
    near = dist <= radius + 0.05
    half = np.where(near, np.pi, np.arcsin(np.clip(radius / np.maximum(dist, 1e-9), 0, 1)))
    centre = np.arctan2(cy, cx)
    step = az[1] - az[0]
    lo_c = np.floor((centre - half - az[0]) / step).astype(np.int64)
    hi_c = np.ceil((centre + half - az[0]) / step).astype(np.int64) + 1
    if wrap:
        full = (hi_c - lo_c) >= len(az)
        lo_c = np.where(full, 0, lo_c)
        hi_c = np.where(full, len(az), hi_c)
    else:
        lo_c, hi_c = np.clip(lo_c, 0, len(az)), np.clip(hi_c, 0, len(az))
    dmin = np.maximum(dist - radius, 0.05)
    dmax = dist + radius
    e = np.stack([np.arctan2(z0, dmin), np.arctan2(z0, dmax), np.arctan2(z1, dmin), np.arctan2(z1, dmax)])
    emin = np.where(near & (z0 < 0), -np.pi / 2, e.min(0)) - 1e-6
    emax = np.where(near & (z1 > 0), np.pi / 2, e.max(0)) + 1e-6
    # rows of the ascending elevation array; converted to descending beam order by the caller
    lo_a = np.searchsorted(elev_asc, emin, "left")
    hi_a = np.searchsorted(elev_asc, emax, "right")
    return nbeams - hi_a, nbeams - lo_a, lo_c, hi_c


def _hit_boxes(boxes, dirs, elev_asc, az, wrap):
    ncols = len(az)
    b = boxes
    radius = np.hypot(b[:, 3], b[:, 4])
    lo_r, hi_r, lo_c, hi_c = _footprint(b[:, 0], b[:, 1], b[:, 2] - b[:, 5], b[:, 2] + b[:, 5], radius,
                                        elev_asc, az, wrap)
    prim, ray = _pairs(lo_r, hi_r, lo_c, hi_c, ncols, wrap)
    d = dirs[ray]
    bp = b[prim]
    c, s = np.cos(bp[:, 6]), np.sin(bp[:, 6])
    dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
    ol = -np.stack([c * bp[:, 0] + s * bp[:, 1], -s * bp[:, 0] + c * bp[:, 1], bp[:, 2]], 1)
    h = bp[:, 3:6]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1 = (-h - ol) * inv
        t2 = (h - ol) * inv
    tn = np.fmin(t1, t2)
    tf = np.fmax(t1, t2)
    axis = np.argmax(tn, 1)
    tmin = np.take_along_axis(tn, axis[:, None], 1)[:, 0]
    tmax = tf.min(1)
    hit = (tmax >= tmin) & (tmin > _MIN_T)
    cos_inc = np.abs(np.take_along_axis(dl, axis[:, None], 1)[:, 0])
    return prim[hit], ray[hit], tmin[hit], cos_inc[hit]


def _hit_cyls(cyls, dirs, elev_asc, az, wrap):
    ncols = len(az)
    c = cyls
    lo_r, hi_r, lo_c, hi_c = _footprint(c[:, 0], c[:, 1], c[:, 2], c[:, 3], c[:, 4], elev_asc, az, wrap)
    prim, ray = _pairs(lo_r, hi_r, lo_c, hi_c, ncols, wrap)
    d = dirs[ray]
    cp = c[prim]
    ox, oy, r = -cp[:, 0], -cp[:, 1], cp[:, 4]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    bq = 2 * (ox * d[:, 0] + oy * d[:, 1])
    cq = ox**2 + oy**2 - r**2
    disc = bq**2 - 4 * a * cq
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-bq - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        z = t_side * d[:, 2]
        side = (disc >= 0) & (t_side > _MIN_T) & (z >= cp[:, 2]) & (z <= cp[:, 3])
        plane = np.where(cp[:, 3] < 0, cp[:, 3], cp[:, 2])  # top cap seen from above, bottom cap from below
        t_cap = plane / d[:, 2]
        px, py = ox + t_cap * d[:, 0], oy + t_cap * d[:, 1]
        cap = ((cp[:, 3] < 0) | (cp[:, 2] > 0)) & (t_cap > _MIN_T) & (px**2 + py**2 <= r**2)
    t = np.where(side, t_side, np.inf)
    t = np.where(cap & (t_cap < t), t_cap, t)
    hit = side | cap
    is_cap = cap & (t == t_cap)
    nx, ny = (ox + t * d[:, 0]) / r, (oy + t * d[:, 1]) / r
    with np.errstate(invalid="ignore"):
        cos_inc = np.where(is_cap, np.abs(d[:, 2]), np.abs(nx * d[:, 0] + ny * d[:, 1]))
    return prim[hit], ray[hit], t[hit], cos_inc[hit]


def scan(scene: Scene, params: SynthParams, rng: np.random.Generator) -> Scan:
    """Cast all rays of one revolution against ``scene`` and simulate the returns."""
    elev = beam_elevations()
    elev_asc = elev[::-1]
    az = azimuths(params)
    wrap = params.azimuth_half_window_deg >= 180.0
    nrays = len(elev) * len(az)
    ce, se = np.cos(elev)[:, None], np.sin(elev)[:, None]
    dirs = np.stack([np.broadcast_to(ce * np.cos(az), (len(elev), len(az))),
                     np.broadcast_to(ce * np.sin(az), (len(elev), len(az))),
                     np.broadcast_to(se, (len(elev), len(az)))], -1).reshape(-1, 3)

    gr = scene.ground
    denom = dirs[:, 2] - gr.gx * dirs[:, 0] - gr.gy * dirs[:, 1]
    with np.errstate(divide="ignore"):
        t_ground = np.where(denom < -1e-4, gr.z0 / denom, np.inf)
    t_ground[t_ground > params.max_range_m * 1.2] = np.inf
    hx, hy = t_ground * dirs[:, 0], t_ground * dirs[:, 1]
    finite = np.isfinite(t_ground)
    t_ground[finite] += gr.roughness(hx[finite], hy[finite]) / denom[finite]

    nb = len(scene.boxes)
    bp, br, bt, bc = _hit_boxes(scene.boxes, dirs, elev_asc, az, wrap)
    cp, cr, ct, cc = _hit_cyls(scene.cyls, dirs, elev_asc, az, wrap)
    prim = np.concatenate([bp, cp + nb])  # global primitive id: boxes then cylinders
    ray = np.concatenate([br, cr])
    t = np.concatenate([bt, ct])
    cos_inc = np.concatenate([bc, cc])
    attrs = np.concatenate([scene.boxes[:, 7:11], scene.cyls[:, 5:9]])  # obj refl porosity gloss
    obj = attrs[prim, 0].astype(np.int64)

    # porous surfaces let a fraction of rays through
    solid = rng.random(len(t)) >= attrs[prim, 2]
    best = t_ground.copy()
    np.minimum.at(best, ray[solid], t[solid])
    win = solid & (t == best[ray])
    hit_prim = np.full(nrays, -1, dtype=np.int64)
    hit_cos = np.abs(denom) / np.sqrt(1 + gr.gx**2 + gr.gy**2)
    hit_prim[ray[win]] = prim[win]
    hit_cos[ray[win]] = cos_inc[win]

    # occlusion bookkeeping on the ideal (noise-free, no dropout) scan
    nobj = len(scene.objects)
    visible = np.zeros(nobj, dtype=np.int64)
    total = np.zeros(nobj, dtype=np.int64)
    m = obj >= 0
    if m.any():
        key = obj[m] * nrays + ray[m]
        ukey, inv = np.unique(key, return_inverse=True)
        tmin = np.full(len(ukey), np.inf)
        np.minimum.at(tmin, inv, t[m])
        uobj, uray = ukey // nrays, ukey % nrays
        owner = np.where(hit_prim[uray] >= 0, attrs[np.maximum(hit_prim[uray], 0), 0], -1).astype(np.int64)
        seen = (owner == uobj) | (tmin <= best[uray] + 0.05)
        total = np.bincount(uobj, minlength=nobj)
        visible = np.bincount(uobj[seen], minlength=nobj)

    has = np.isfinite(best) & (best <= params.max_range_m)
    refl = np.where(hit_prim >= 0, attrs[np.maximum(hit_prim, 0), 1], gr.refl)
    gloss = np.where(hit_prim >= 0, attrs[np.maximum(hit_prim, 0), 3], 0.0)
    refl = refl * (1.0 - gloss + gloss * np.clip(hit_cos, 0, 1) ** GLOSS_EXPONENT)
    signal = refl * (REF_RANGE_M / np.maximum(best, 1.0)) ** RANGE_EXPONENT / SIGNAL_SCALE
    p_keep = (1.0 - params.dropout) * (1.0 - np.exp(-signal))
    keep = has & (rng.random(nrays) < p_keep)
    idx = np.nonzero(keep)[0]
    rng_t = best[idx] + rng.normal(0.0, 1.0, len(idx)) * params.range_noise_m
    xyz = dirs[idx] * rng_t[:, None]
    falloff = np.minimum(1.0, (INTENSITY_RANGE_M / rng_t) ** 2)
    inten = refl[idx] * falloff + rng.normal(0.0, 1.0, len(idx)) * params.intensity_noise
    pts = np.empty((len(idx), 4), dtype=np.float32)
    pts[:, :3] = np.round(xyz, 4)  # quantised: byte-identical output across CPUs' last-ulp differences
    pts[:, 3] = np.round(np.clip(inten, 0.0, 0.99), 2)
    pobj = np.where(hit_prim[idx] >= 0, attrs[np.maximum(hit_prim[idx], 0), 0], -1).astype(np.int64)
    return Scan(pts, pobj, visible, total)
