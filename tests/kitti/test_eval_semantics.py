"""Devkit semantics of dm3d_exp.kitti.eval on synthetic scenes (no reference data needed)."""
import numpy as np
import pytest

from dm3d_exp.errors import InputError
from dm3d_exp.kitti.eval import evaluate, get_thresholds
from dm3d_exp.kitti.format import KittiObjects

DIMS = {"Car": (1.5, 1.6, 3.9), "Van": (2.2, 1.9, 5.0), "Pedestrian": (1.75, 0.6, 0.8),
        "Person_sitting": (1.2, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.8)}


def objs(rows, score=None):
    """rows: (name, trunc, occ, alpha, (x1,y1,x2,y2), (h,w,l), (x,y,z), ry)."""
    return KittiObjects(np.array([r[0] for r in rows]), np.array([r[1] for r in rows], float),
                        np.array([r[2] for r in rows], int), np.array([r[3] for r in rows], float),
                        np.array([r[4] for r in rows], float).reshape(-1, 4),
                        np.array([r[5] for r in rows], float).reshape(-1, 3),
                        np.array([r[6] for r in rows], float).reshape(-1, 3), np.array([r[7] for r in rows], float),
                        None if score is None else np.asarray(score, float))


def random_scene(rng, n_frames=30):
    """Frames with well separated objects of every class (valid at every difficulty), rotated freely, plus
    neighbour classes, occluded / small boxes and DontCare regions."""
    gt = []
    for _ in range(n_frames):
        rows = []
        names = ["Car", "Car", "Pedestrian", "Pedestrian", "Cyclist", "Cyclist", "Van", "Person_sitting",
                 "Car", "Pedestrian"]
        for k, name in enumerate(names):
            h, w, l = np.array(DIMS[name]) * rng.uniform(0.8, 1.2, 3)
            x, z = -30 + 6.5 * k + rng.uniform(-1, 1), rng.uniform(8, 40)
            ry = rng.uniform(-np.pi, np.pi)
            x1 = 20 + 120 * k + rng.uniform(0, 10)
            height = rng.uniform(45, 110)
            occ, trunc = 0, rng.uniform(0, 0.1)
            if k == 8:  # occluded car: ignored at easy/moderate
                occ = 2
            if k == 9:  # small pedestrian: ignored at easy (and a small detection)
                height = rng.uniform(26, 38)
            y1 = rng.uniform(150, 200)
            rows.append((name, trunc, occ, rng.uniform(-np.pi, np.pi), (x1, y1, x1 + 0.6 * height, y1 + height),
                         (h, w, l), (x, rng.uniform(1, 2), z), ry))
        rows.append(("DontCare", -1, -1, -10, (1300, 150, 1350, 180), (-1, -1, -1), (-1000, -1000, -1000), -10))
        gt.append(objs(rows))
    return gt


def gt_as_detections(gt, rng):
    out = []
    for g in gt:
        d = g.select(g.name != "DontCare")
        d.score = rng.uniform(0.05, 1.0, len(d))
        out.append(d)
    return out


def test_random_rotated_ground_truth_as_detections_gives_100():
    rng = np.random.default_rng(0)
    gt = random_scene(rng)
    res = evaluate(gt, gt_as_detections(gt, rng))
    assert len(res) == 3 * 4 * 3 * 2
    assert all(v == pytest.approx(100.0) for v in res.values()), {k: v for k, v in res.items() if v < 99.999}


def _tile(frame_gt, frame_dt, n=50):
    return [frame_gt] * n, [frame_dt] * n


CAR = ("Car", 0.0, 0, -1.5, (100, 150, 200, 200), DIMS["Car"], (0.0, 1.7, 20.0), 0.0)


def _det(row, score):
    return objs([row], [score])


def test_dontcare_removes_false_positives_in_2d_only():
    """computeStatistics uses the metric's overlap for DontCare; KITTI DontCare boxes are 3D dummies."""
    gt = objs([CAR, ("DontCare", -1, -1, -10, (500, 150, 600, 200), (-1, -1, -1), (-1000, -1000, -1000), -10)])
    fp_in_dc = ("Car", 0.0, 0, -1.5, (505, 152, 595, 198), DIMS["Car"], (8.0, 1.7, 20.0), 0.0)
    dt = objs([CAR, fp_in_dc], [0.5, 0.9])  # the unmatched detection scores higher
    res = evaluate(*_tile(gt, dt), classes=("Car",))
    assert res["Car/bbox/easy/R40"] == pytest.approx(100.0)
    assert res["Car/bev/easy/R40"] == pytest.approx(50.0)
    assert res["Car/3d/easy/R40"] == pytest.approx(50.0)


def test_neighbour_class_absorbs_detection():
    van = ("Van", 0.0, 0, -1.5, (300, 150, 420, 210), DIMS["Van"], (6.0, 1.9, 20.0), 0.0)
    dt = objs([CAR, ("Car",) + van[1:]], [0.5, 0.9])  # a higher-scored Car detection on the Van
    res = evaluate(*_tile(objs([CAR, van]), dt), classes=("Car",))
    assert res["Car/bbox/easy/R40"] == pytest.approx(100.0)
    assert res["Car/3d/easy/R40"] == pytest.approx(100.0)
    # the same detection on a Truck is a false positive (Truck is not Car's neighbour)
    truck = ("Truck",) + van[1:]
    res = evaluate(*_tile(objs([CAR, truck]), dt), classes=("Car",))
    assert res["Car/bbox/easy/R40"] == pytest.approx(50.0)


def test_small_detection_of_any_class_is_ignored_and_can_absorb_ground_truth():
    """cleanData marks every detection lower than MIN_HEIGHT as ignored (1), whatever its class."""
    car = ("Car", 0.0, 0, -1.5, (100, 150, 200, 191), DIMS["Car"], (0.0, 1.7, 20.0), 0.0)  # 41 px high
    small_ped = ("Pedestrian", 0.0, 0, -1.5, (100, 150, 200, 189.5), DIMS["Car"], (0.0, 1.7, 20.0), 0.0)  # 39.5
    dt = objs([car, small_ped], [0.5, 0.9])
    res = evaluate(*_tile(objs([car]), dt), classes=("Car",))
    # easy: the higher-scored ignored detection takes the car in the threshold pass -> no TP at all
    assert res["Car/bbox/easy/R40"] == 0.0
    # moderate (min 25 px): the pedestrian detection is just another class -> car found, no FP
    assert res["Car/bbox/moderate/R40"] == pytest.approx(100.0)
    # a small car-class false positive elsewhere is ignored, not counted
    small_fp = ("Car", 0.0, 0, -1.5, (600, 150, 650, 180), DIMS["Car"], (9.0, 1.7, 20.0), 0.0)
    res = evaluate(*_tile(objs([car]), objs([car, small_fp], [0.5, 0.9])), classes=("Car",))
    assert res["Car/bbox/easy/R40"] == pytest.approx(100.0)


def test_ground_truth_height_limit_is_inclusive():
    """cleanData ignores ground truth with height <= MIN_HEIGHT (confirmed by the kitti_val_car reference)."""
    car40 = ("Car", 0.0, 0, -1.5, (100, 150, 200, 190), DIMS["Car"], (0.0, 1.7, 20.0), 0.0)
    res = evaluate(*_tile(objs([car40]), _det(car40, 0.9)), classes=("Car",))
    # easy: the 40 px box is ignored (n_gt = 0 -> AP 0); its detection (int height 40, not < 40) is
    # assigned to the ignored box, so it is no false positive either
    assert res["Car/bbox/easy/R40"] == 0.0
    assert res["Car/bbox/moderate/R40"] == pytest.approx(100.0)


def test_orientation_similarity():
    turned = CAR[:3] + (CAR[3] + np.pi / 2,) + CAR[4:]
    res = evaluate(*_tile(objs([CAR]), _det(turned, 0.9)), classes=("Car",))
    assert res["Car/bbox/easy/R40"] == pytest.approx(100.0)
    assert res["Car/aos/easy/R40"] == pytest.approx(50.0)  # (1 + cos(pi/2)) / 2


def test_keys_of_undetected_classes_and_invalid_alpha():
    dt = objs([CAR], [0.9])
    res = evaluate(*_tile(objs([CAR]), dt))
    assert {k.split("/")[0] for k in res} == {"Car"}  # devkit: a class is evaluated only if detected
    assert len(res) == 24
    res = evaluate(*_tile(objs([CAR]), dt), report_undetected=True)
    assert len(res) == 72 and res["Cyclist/3d/hard/R11"] == 0.0
    no_alpha = objs([CAR[:3] + (-10,) + CAR[4:]], [0.9])
    res = evaluate(*_tile(objs([CAR]), no_alpha), classes=("Car",))
    assert not any("/aos/" in k for k in res) and len(res) == 18
    res = evaluate(*_tile(objs([CAR]), dt), classes=("Car",), metrics=("3d",))
    assert sorted({k.split("/")[1] for k in res}) == ["3d"]


def test_get_thresholds():
    t = get_thresholds(np.linspace(1, 0, 41), 41)
    np.testing.assert_allclose(t, np.linspace(1, 0, 41))
    t = get_thresholds(np.arange(100)[::-1] / 100.0, 100)
    assert len(t) == 41 and t[0] == 0.99 and t[-1] == 0.0
    assert len(get_thresholds([0.9, 0.8, 0.7], 10)) == 3  # the devkit cap with few boxes


def test_bad_arguments():
    with pytest.raises(InputError, match="frames"):
        evaluate([objs([CAR])], [])
    with pytest.raises(InputError, match="class"):
        evaluate([objs([CAR])], [objs([CAR], [1.0])], classes=("Van",))
    with pytest.raises(InputError, match="score"):
        evaluate([objs([CAR])], [objs([CAR])])
