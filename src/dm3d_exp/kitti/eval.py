"""KITTI 3D object-detection evaluation equivalent to the official devkit ``cpp/evaluate_object.cpp``.

Computes 2D bbox, BEV, 3D and AOS average precision for Car / Pedestrian / Cyclist at easy / moderate /
hard, as both AP_R40 (mean of the 41-point interpolated precision at points 1..40) and AP_R11 (mean of
points 0, 4, ..., 40), in percent. Result keys are ``Class/metric/difficulty/R40|R11``.

Devkit behaviours reproduced here (names refer to functions of evaluate_object.cpp):

* ``cleanData``: a ground-truth box of the evaluated class is *ignored* (neither TP nor FN, but may absorb
  a detection) when occlusion > MAX_OCCLUSION (0/1/2), truncation > MAX_TRUNCATION (0.15/0.3/0.5) or bbox
  height <= MIN_HEIGHT (40/25/25 px); the neighbouring classes Van (for Car) and Person_sitting (for
  Pedestrian) are always ignored; other classes and DontCare are skipped. Detections with
  ``int(|y1 - y2|) < MIN_HEIGHT`` are ignored *whatever their class* (they may still be assigned to a
  ground truth, which then counts neither as TP nor FN); other-class detections are skipped.
* ``computeStatistics``: ground truths are visited in file order; each takes, among the not yet assigned
  detections whose overlap is strictly greater than MIN_OVERLAP (Car 0.7, Pedestrian/Cyclist 0.5 for
  bbox, bev and 3d), the one with the highest score (threshold pass) or the non-ignored one with the
  highest overlap, falling back to the first ignored one (precision pass, detections with score <
  threshold removed). Unassigned non-ignored detections are false positives unless
  ``overlap(det, DontCare, criterion 0)`` (intersection / detection area, computed with the *metric's*
  overlap function) exceeds MIN_OVERLAP. For bev/3d this uses the DontCare 3D box, which in KITTI labels
  is the dummy (-1000, -1000, -1000) box, so DontCare regions effectively only act on the 2D bbox metric.
* ``getThresholds``: score thresholds from the sorted TP scores of the threshold pass, one per 1/40 of
  recall (41 sample points), with the devkit's left/right recall rounding and float accumulation.
* ``eval_class``: precision = TP / (TP + FP) per threshold, AOS = sum over TPs of (1 + cos(dalpha)) / 2 /
  (TP + FP), both made monotone with max over the tail; points beyond the number of thresholds are 0.
* ``eval``: a class is evaluated for a metric only if at least one detection of it is valid for that
  metric (bbox: x1 >= 0; bev: x, z != -1000 and w, l > 0; 3d: also y != -1000 and h > 0); AOS is
  computed only for the 2D bbox pass and only if no detection has alpha == -10. Keys of classes not
  evaluated are left out (``report_undetected=True`` reports them as 0 instead). A class/difficulty
  without any valid ground truth gives AP 0.

Computation is vectorised across frames: overlaps are computed once per metric for all same-frame
(ground truth, detection) pairs, and the sequential greedy assignment runs over "the k-th candidate
ground truth of every frame" for all frames and all 41 thresholds at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from .format import EVAL_CLASSES as CLASSES, KittiObjects, read_label_file
from .iou import bev_box_overlap, box3d_overlap, image_box_overlap

__all__ = [
    "CLASSES", "METRICS", "DIFFICULTIES", "MIN_OVERLAP", "evaluate", "evaluate_dirs", "read_frame_ids",
    "get_thresholds", "average_precision",
]

METRICS = ("bbox", "bev", "3d", "aos")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
# MIN_OVERLAP[metric][class] of evaluate_object.cpp: the same for image, ground and 3D
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOUR_CLASS = {"car": "van", "pedestrian": "person_sitting"}
N_SAMPLE_PTS = 41
_BOX_METRICS = ("bbox", "bev", "3d")


# ---------------------------------------------------------------------------------------------------------
# AP helpers
# ---------------------------------------------------------------------------------------------------------
def get_thresholds(scores: Iterable[float], n_groundtruth: int, n_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """``getThresholds``: scores giving (approximately) linearly spaced recall, highest score first."""
    v = sorted((float(s) for s in scores), reverse=True)
    t: list[float] = []
    current_recall = 0.0
    n = len(v)
    step = 1.0 / (n_sample_pts - 1.0)
    for i in range(n):
        l_recall = (i + 1) / n_groundtruth
        r_recall = (i + 2) / n_groundtruth if i < n - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < n - 1:
            continue
        t.append(v[i])
        current_recall += step
    return np.asarray(t, dtype=np.float64)


def average_precision(precision: np.ndarray) -> tuple[float, float]:
    """(AP_R40, AP_R11) in percent from the 41 interpolated precision points."""
    p = np.asarray(precision, dtype=np.float64)
    return float(p[1:41].sum() / 40.0 * 100.0), float(p[0:41:4].sum() / 11.0 * 100.0)


# ---------------------------------------------------------------------------------------------------------
# flattened frames and overlaps
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Flat:
    frame: np.ndarray  # (n,) frame index, non-decreasing
    name: np.ndarray  # lower-case class names
    obj: KittiObjects


def _flatten(frames: Sequence[KittiObjects]) -> _Flat:
    parts = [f for f in frames if len(f)]
    counts = np.array([len(f) for f in frames], dtype=np.int64)
    frame = np.repeat(np.arange(len(frames)), counts)
    if not parts:
        obj = KittiObjects.empty(with_score=True)
    else:
        obj = KittiObjects(
            np.concatenate([f.name for f in parts]),
            np.concatenate([np.asarray(f.truncated, dtype=np.float64) for f in parts]),
            np.concatenate([np.asarray(f.occluded).astype(np.int64) for f in parts]),
            np.concatenate([np.asarray(f.alpha, dtype=np.float64) for f in parts]),
            np.concatenate([np.asarray(f.bbox, dtype=np.float64).reshape(-1, 4) for f in parts]),
            np.concatenate([np.asarray(f.dimensions, dtype=np.float64).reshape(-1, 3) for f in parts]),
            np.concatenate([np.asarray(f.location, dtype=np.float64).reshape(-1, 3) for f in parts]),
            np.concatenate([np.asarray(f.rotation_y, dtype=np.float64) for f in parts]),
            None if any(f.score is None for f in parts) else np.concatenate(
                [np.asarray(f.score, dtype=np.float64) for f in parts]),
        )
    return _Flat(frame, np.char.lower(obj.name.astype(str)), obj)


def _same_frame_pairs(frame_a: np.ndarray, frame_b: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with frame_a[i] == frame_b[j]; both frame arrays sorted; i-major, j in file order."""
    cnt_b = np.bincount(frame_b, minlength=n_frames)
    start_b = np.concatenate([[0], np.cumsum(cnt_b)[:-1]])
    reps = cnt_b[frame_a]
    ia = np.repeat(np.arange(len(frame_a)), reps)
    offs = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    jb = start_b[frame_a][ia] + offs
    return ia, jb


def _box7(o: KittiObjects, idx: np.ndarray) -> np.ndarray:
    """x y z h w l ry rows."""
    return np.concatenate([o.location[idx], o.dimensions[idx], o.rotation_y[idx, None]], axis=1)


def _bev5(o: KittiObjects, idx: np.ndarray) -> np.ndarray:
    """x z l w ry rows (|l|, |w|: boost builds the same square for the -1 dims of DontCare boxes)."""
    return np.stack([o.location[idx, 0], o.location[idx, 2], np.abs(o.dimensions[idx, 2]),
                     np.abs(o.dimensions[idx, 1]), o.rotation_y[idx]], axis=1)


def _overlaps(metric: str, d: KittiObjects, di: np.ndarray, g: KittiObjects, gi: np.ndarray,
              criterion: int) -> np.ndarray:
    """Overlap of detection rows di with ground-truth rows gi (the devkit's ``boxoverlap(det, gt, criterion)``)."""
    out = np.zeros(len(di))
    if len(di) == 0:
        return out
    if metric == "bbox":
        return image_box_overlap(d.bbox[di], g.bbox[gi], criterion)
    # bird's-eye circumscribed-circle test: pairs farther apart cannot intersect
    rd = 0.5 * np.hypot(d.dimensions[di, 1], d.dimensions[di, 2])
    rg = 0.5 * np.hypot(g.dimensions[gi, 1], g.dimensions[gi, 2])
    dist = np.hypot(d.location[di, 0] - g.location[gi, 0], d.location[di, 2] - g.location[gi, 2])
    near = dist <= (rd + rg) * (1 + 1e-9) + 1e-9
    if metric == "bev":
        out[near] = bev_box_overlap(_bev5(d, di[near]), _bev5(g, gi[near]), criterion)
    else:
        out[near] = box3d_overlap(_box7(d, di[near]), _box7(g, gi[near]), criterion)
    return out


# ---------------------------------------------------------------------------------------------------------
# core: one class, difficulty and metric
# ---------------------------------------------------------------------------------------------------------
def _eval_one(ignored_gt: np.ndarray, ignored_det: np.ndarray, score: np.ndarray, gt_frame: np.ndarray,
              det_frame: np.ndarray, pair_g: np.ndarray, pair_d: np.ndarray, pair_ov: np.ndarray,
              min_overlap: float, dc_hit: np.ndarray, alpha_gt: np.ndarray | None,
              alpha_det: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``eval_class`` for one (class, difficulty, metric): 41-point precision (and AOS if alphas given)."""
    compute_aos = alpha_gt is not None
    precision = np.zeros(N_SAMPLE_PTS)
    aos = np.zeros(N_SAMPLE_PTS) if compute_aos else None
    n_gt = int((ignored_gt == 0).sum())

    # candidate pairs: overlap above the class minimum, gt of class/neighbour, det not of another class
    m = (pair_ov > min_overlap) & (ignored_gt[pair_g] != -1) & (ignored_det[pair_d] != -1)
    pg, pd, po = pair_g[m], pair_d[m], pair_ov[m]
    if len(pg) == 0:
        return precision, aos  # no TP possible -> no thresholds -> precision 0
    # dense per-frame layout (frames with candidates x k-th candidate gt x k-th candidate det)
    ug, pg_c = np.unique(pg, return_inverse=True)
    ud, pd_c = np.unique(pd, return_inverse=True)
    gf, df = gt_frame[ug], det_frame[ud]
    uf = np.unique(gf)
    g_row, d_row = np.searchsorted(uf, gf), np.searchsorted(uf, df)
    g_rank = np.arange(len(ug)) - np.searchsorted(gf, gf)
    d_rank = np.arange(len(ud)) - np.searchsorted(df, df)
    nf, ng, nd = len(uf), int(g_rank.max()) + 1, int(d_rank.max()) + 1
    ov = np.full((nf, ng, nd), -1.0)
    ov[g_row[pg_c], g_rank[pg_c], d_rank[pd_c]] = po
    igt = np.full((nf, ng), -2, dtype=np.int64)
    igt[g_row, g_rank] = ignored_gt[ug]
    sd = np.full((nf, nd), -np.inf)
    sd[d_row, d_rank] = score[ud]
    idt = np.full((nf, nd), -1, dtype=np.int64)
    idt[d_row, d_rank] = ignored_det[ud]
    fp_able = np.zeros((nf, nd), dtype=bool)  # would count as FP when unassigned
    fp_able[d_row, d_rank] = (ignored_det[ud] == 0) & ~dc_hit[ud]
    is_cand = ov > min_overlap
    rows = np.arange(nf)

    # threshold pass (compute_fp = false): highest-score candidate; TP scores feed getThresholds
    assigned = np.zeros((nf, nd), dtype=bool)
    tp_scores = []
    for k in range(ng):
        cand = is_cand[:, k] & ~assigned
        has = cand.any(1)
        j = np.argmax(np.where(cand, sd, -np.inf), axis=1)
        assigned[rows[has], j[has]] = True
        tp = has & (igt[:, k] == 0) & (idt[rows, j] == 0)
        tp_scores.append(sd[rows[tp], j[tp]])
    thresholds = get_thresholds(np.concatenate(tp_scores), n_gt)
    nt = min(len(thresholds), N_SAMPLE_PTS)
    if nt == 0:
        return precision, aos
    thresholds = thresholds[:nt]

    # precision pass (compute_fp = true) for all thresholds at once
    above = sd[:, None, :] >= thresholds[None, :, None]  # (nf, nt, nd)
    normal_det = (idt == 0)[:, None, :] & above
    ignored_det_above = (idt == 1)[:, None, :] & above
    assigned = np.zeros((nf, nt, nd), dtype=bool)
    tp = np.zeros(nt, dtype=np.int64)
    fn = np.zeros(nt, dtype=np.int64)
    sim = np.zeros(nt)
    if compute_aos:
        ag = np.zeros((nf, ng))
        ag[g_row, g_rank] = alpha_gt[ug]
        ad = np.zeros((nf, nd))
        ad[d_row, d_rank] = alpha_det[ud]
    fi_all, ti_all = np.meshgrid(rows, np.arange(nt), indexing="ij")
    for k in range(ng):
        free = is_cand[:, k][:, None, :] & ~assigned
        normal = free & normal_det
        ign = free & ignored_det_above
        has_n = normal.any(2)
        j = np.where(has_n, np.argmax(np.where(normal, ov[:, k][:, None, :], -np.inf), axis=2),
                     np.argmax(ign, axis=2))
        has = has_n | ign.any(2)
        assigned[fi_all[has], ti_all[has], j[has]] = True
        valid_gt = (igt[:, k] == 0)[:, None]
        tp_m = has_n & valid_gt
        tp += tp_m.sum(0)
        fn += (~has & valid_gt).sum(0)
        if compute_aos:
            delta = ag[:, k][:, None] - np.take_along_axis(ad, j, axis=1)
            sim += np.where(tp_m, (1.0 + np.cos(delta)) / 2.0, 0.0).sum(0)
    # valid ground truth without any candidate detection is a FN at every threshold
    fn += n_gt - int((igt == 0).sum())
    # FP: non-ignored detections above threshold, unassigned and not inside a DontCare region
    fp_scores = np.sort(score[(ignored_det == 0) & ~dc_hit])
    fp = (len(fp_scores) - np.searchsorted(fp_scores, thresholds, side="left")).astype(np.int64)
    fp -= (assigned & fp_able[:, None, :]).sum((0, 2))
    den = (tp + fp).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(den > 0, tp / den, 0.0)
        precision[:nt] = prec
        if compute_aos:
            aos[:nt] = np.where(den > 0, sim / den, 0.0)
    # max over the tail (monotone interpolation)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    if compute_aos:
        aos = np.maximum.accumulate(aos[::-1])[::-1]
    return precision, aos


# ---------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------
def evaluate(gt: Sequence[KittiObjects], dt: Sequence[KittiObjects],
             classes: Sequence[str] = CLASSES, metrics: Sequence[str] = METRICS, *,
             report_undetected: bool = False, return_curves: bool = False):
    """Official-devkit KITTI AP of detections ``dt`` against ground truth ``gt`` (one entry per frame).

    Returns ``{"Class/metric/difficulty/R40|R11": AP in percent}`` for metric in bbox, bev, 3d, aos.
    As in ``evaluate_object.cpp`` a class is only reported for a metric if at least one detection of
    it is valid for that metric, and AOS only if no detection has alpha == -10; with
    ``report_undetected=True`` the skipped class keys are reported as 0.0 instead (AOS still needs alphas).
    ``return_curves=True`` returns ``(ap, curves)`` with the 41-point arrays under ``Class/metric/difficulty``.
    """
    classes = tuple(classes)
    metrics = tuple(metrics)
    for c in classes:
        if c not in MIN_OVERLAP:
            raise InputError(f"unknown evaluation class {c!r}, expected some of {', '.join(CLASSES)}")
    for mt in metrics:
        if mt not in METRICS:
            raise InputError(f"unknown metric {mt!r}, expected some of {', '.join(METRICS)}")
    if len(gt) != len(dt):
        raise InputError(f"{len(gt)} ground-truth frames but {len(dt)} detection frames; expected one "
                         f"detection entry per ground-truth frame")
    for i, d in enumerate(dt):
        if len(d) and d.score is None:
            raise InputError(f"detections of frame {i} have no score column; expected 16-field result lines")
    n_frames = len(gt)
    G, D = _flatten(gt), _flatten(dt)
    g, d = G.obj, D.obj
    score = d.score if d.score is not None else np.zeros(len(d))
    det_height = np.trunc(np.abs(d.bbox[:, 1] - d.bbox[:, 3]))  # int32_t height = fabs(y1 - y2)
    gt_height = g.bbox[:, 3] - g.bbox[:, 1]
    compute_aos = not bool((d.alpha == -10).any())

    # overlaps for all same-frame (gt of an evaluated or neighbouring class, det) pairs, per metric
    wanted = {c.lower() for c in classes}
    wanted |= {NEIGHBOUR_CLASS[c] for c in wanted if c in NEIGHBOUR_CLASS}
    rel = np.nonzero(np.isin(G.name, sorted(wanted)))[0]
    gi_rel, dj = _same_frame_pairs(G.frame[rel], D.frame, n_frames)
    pair_g = rel[gi_rel]
    dc = np.nonzero(G.name == "dontcare")[0]
    ci, cj = _same_frame_pairs(G.frame[dc], D.frame, n_frames)
    box_metrics = [mt for mt in _BOX_METRICS if mt in metrics or (mt == "bbox" and "aos" in metrics)]
    pair_ov, dc_max = {}, {}
    for mt in box_metrics:
        pair_ov[mt] = _overlaps(mt, d, dj, g, pair_g, -1)
        dmax = np.zeros(len(d))
        if len(cj):
            np.maximum.at(dmax, cj, _overlaps(mt, d, cj, g, dc[ci], 0))
        dc_max[mt] = dmax

    loc, dims = d.location, d.dimensions
    valid_for = {
        "bbox": d.bbox[:, 0] >= 0,
        "bev": (loc[:, 0] != -1000) & (loc[:, 2] != -1000) & (dims[:, 1] > 0) & (dims[:, 2] > 0),
        "3d": (loc[:, 0] != -1000) & (loc[:, 1] != -1000) & (loc[:, 2] != -1000) & (dims[:, 0] > 0)
              & (dims[:, 1] > 0) & (dims[:, 2] > 0),
    }
    results: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {}
    for cls in classes:
        cl = cls.lower()
        min_ov = MIN_OVERLAP[cls]
        det_is_c = D.name == cl
        gt_valid_class = np.where(G.name == cl, 1, np.where(G.name == NEIGHBOUR_CLASS.get(cl, "\0"), 0, -1))
        for mt in box_metrics:
            evaluated = bool((det_is_c & valid_for[mt]).any())
            want_box = mt in metrics
            want_aos = mt == "bbox" and "aos" in metrics and compute_aos
            for di, diff in enumerate(DIFFICULTIES):
                keys = ([f"{cls}/{mt}/{diff}"] if want_box else []) + ([f"{cls}/aos/{diff}"] if want_aos else [])
                if not evaluated:
                    if report_undetected:
                        for key in keys:
                            results[f"{key}/R40"] = results[f"{key}/R11"] = 0.0
                    continue
                ignore = ((g.occluded > MAX_OCCLUSION[di]) | (g.truncated > MAX_TRUNCATION[di])
                          | (gt_height <= MIN_HEIGHT[di]))
                ignored_gt = np.where(gt_valid_class == 1, np.where(ignore, 1, 0),
                                      np.where(gt_valid_class == 0, 1, -1))
                ignored_det = np.where(det_height < MIN_HEIGHT[di], 1, np.where(det_is_c, 0, -1))
                prec, aos = _eval_one(ignored_gt, ignored_det, score, G.frame, D.frame, pair_g, dj, pair_ov[mt],
                                      min_ov, dc_max[mt] > min_ov, g.alpha if want_aos else None,
                                      d.alpha if want_aos else None)
                for name, arr, on in ((f"{cls}/{mt}/{diff}", prec, want_box), (f"{cls}/aos/{diff}", aos, want_aos)):
                    if on:
                        results[f"{name}/R40"], results[f"{name}/R11"] = average_precision(arr)
                        curves[name] = arr
    ordered = {k: results[k] for k in sorted(results)}
    return (ordered, curves) if return_curves else ordered


def read_frame_ids(path: str | os.PathLike) -> list[str]:
    """ImageSets-style list: one frame id per line (blank lines ignored)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read frame list ({e.strerror})") from None
    ids = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not ids:
        raise InputError(f"{path}: frame list is empty, expected one frame id (e.g. 000123) per line")
    return ids


def _label_ids(directory: Path, what: str) -> list[str]:
    if not directory.is_dir():
        raise InputError(f"{directory}: {what} directory does not exist")
    ids = sorted(p.stem for p in directory.glob("*.txt"))
    if not ids:
        raise InputError(f"{directory}: {what} directory has no .txt label files")
    return ids


def evaluate_dirs(gt_dir: str | os.PathLike, det_dir: str | os.PathLike, frame_ids: Sequence[str] | None = None,
                  classes: Sequence[str] = CLASSES, metrics: Sequence[str] = METRICS, *,
                  report_undetected: bool = False) -> dict[str, float]:
    """Evaluate KITTI result files ``det_dir/<id>.txt`` against ``gt_dir/<id>.txt`` (label_2 format).

    ``frame_ids`` defaults to every ``*.txt`` in ``gt_dir``. Every evaluated frame needs a result file
    (an empty file means no detections), as the devkit requires; result files of other frames are ignored.
    """
    gt_dir, det_dir = Path(gt_dir), Path(det_dir)
    if frame_ids is None:
        ids = _label_ids(gt_dir, "ground-truth label")
    else:
        ids = [str(i).strip() for i in frame_ids]
        if not ids:
            raise InputError("empty frame id list, expected at least one frame id")
        if not gt_dir.is_dir():
            raise InputError(f"{gt_dir}: ground-truth label directory does not exist")
        missing_gt = [i for i in ids if not (gt_dir / f"{i}.txt").is_file()]
        if missing_gt:
            raise InputError(f"{gt_dir / (missing_gt[0] + '.txt')}: ground-truth label file missing "
                             f"({len(missing_gt)} of {len(ids)} listed frames have none)")
    if not det_dir.is_dir():
        raise InputError(f"{det_dir}: detection result directory does not exist")
    present = {p.stem for p in det_dir.glob("*.txt")}
    if not present:
        raise InputError(f"{det_dir}: detection result directory has no .txt result files")
    missing = [i for i in ids if i not in present]
    if missing:
        raise InputError(f"{det_dir / (missing[0] + '.txt')}: result file missing ({len(missing)} of "
                         f"{len(ids)} ground-truth frames have no result file; write an empty file for "
                         f"frames without detections)")
    gt = [read_label_file(gt_dir / f"{i}.txt", with_score=False) for i in ids]
    dt = [read_label_file(det_dir / f"{i}.txt", with_score=True) for i in ids]
    return evaluate(gt, dt, classes, metrics, report_undetected=report_undetected)
