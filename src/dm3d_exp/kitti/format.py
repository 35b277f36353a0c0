"""Read and write the KITTI object layout: label_2 / result text files, calib files, velodyne .bin.

Label line (KITTI devkit readme): type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]
— 15 fields for ground truth, 16 for detections (score last). Locations are in rectified camera
coordinates (x right, y down, z forward), y at the bottom of the box; dimensions are height, width, length.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_write_bytes

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
EVAL_CLASSES = ("Car", "Pedestrian", "Cyclist")  # the classes the KITTI devkit scores (the project's one list)


@dataclass
class KittiObjects:
    """All objects of one frame as column arrays (n objects)."""

    name: np.ndarray  # (n,) str
    truncated: np.ndarray  # (n,) float
    occluded: np.ndarray  # (n,) int
    alpha: np.ndarray  # (n,) float
    bbox: np.ndarray  # (n, 4) x1 y1 x2 y2 image pixels
    dimensions: np.ndarray  # (n, 3) h w l metres
    location: np.ndarray  # (n, 3) x y z camera coords, bottom centre
    rotation_y: np.ndarray  # (n,)
    score: np.ndarray | None = None  # (n,) detections only

    def __len__(self) -> int:
        return len(self.name)

    @classmethod
    def empty(cls, with_score: bool = False) -> "KittiObjects":
        z = np.zeros((0,))
        return cls(np.zeros((0,), dtype="<U16"), z, np.zeros((0,), dtype=int), z, np.zeros((0, 4)),
                   np.zeros((0, 3)), np.zeros((0, 3)), z, z.copy() if with_score else None)

    def select(self, idx) -> "KittiObjects":
        return KittiObjects(self.name[idx], self.truncated[idx], self.occluded[idx], self.alpha[idx],
                            self.bbox[idx], self.dimensions[idx], self.location[idx], self.rotation_y[idx],
                            None if self.score is None else self.score[idx])


def parse_label_lines(lines: list[str], path: str | os.PathLike, with_score: bool | None = None,
                      classes: tuple[str, ...] | None = KITTI_CLASSES) -> KittiObjects:
    """Parse KITTI label/result lines; ``with_score=None`` accepts 15 or 16 fields per line."""
    rows = []
    for i, line in enumerate(lines, 1):
        f = line.split()
        if not f:
            continue
        expected = {True: (16,), False: (15,), None: (15, 16)}[with_score]
        if len(f) not in expected:
            raise InputError(f"{path}:{i}: label line has {len(f)} fields, expected "
                             f"{' or '.join(map(str, expected))} (type trunc occ alpha bbox[4] dims[3] loc[3] ry [score])")
        if classes is not None and f[0] not in classes:
            raise InputError(f"{path}:{i}: unknown class name {f[0]!r}, expected one of {', '.join(classes)}")
        try:
            rows.append((f[0], [float(v) for v in f[1:]]))
        except ValueError:
            raise InputError(f"{path}:{i}: non-numeric field in label line {line.strip()!r}") from None
    if not rows:
        return KittiObjects.empty(with_score=bool(with_score))
    names = np.array([r[0] for r in rows])
    num = np.array([r[1] + [np.nan] * (15 - len(r[1])) for r in rows], dtype=np.float64)
    has_score = with_score if with_score is not None else bool(np.isfinite(num[:, 14]).all())
    if with_score is None and np.isfinite(num[:, 14]).any() and not has_score:
        raise InputError(f"{path}: mixes lines with and without a score column")
    return KittiObjects(names, num[:, 0], num[:, 1].astype(int), num[:, 2], num[:, 3:7], num[:, 7:10],
                        num[:, 10:13], num[:, 13], num[:, 14] if has_score else None)


def read_label_file(path: str | os.PathLike, with_score: bool | None = None,
                    classes: tuple[str, ...] | None = KITTI_CLASSES) -> KittiObjects:
    """Read one label_2 (15 fields) or result (16 fields) text file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read label file ({e.strerror})") from None
    return parse_label_lines(lines, path, with_score, classes)


def format_label_lines(objs: KittiObjects) -> str:
    """KITTI text for ``objs`` (score column written when present)."""
    out = []
    for i in range(len(objs)):
        h, w, l = objs.dimensions[i]
        x, y, z = objs.location[i]
        s = (f"{objs.name[i]} {objs.truncated[i]:.2f} {int(objs.occluded[i])} {objs.alpha[i]:.2f} "
             f"{objs.bbox[i, 0]:.2f} {objs.bbox[i, 1]:.2f} {objs.bbox[i, 2]:.2f} {objs.bbox[i, 3]:.2f} "
             f"{h:.2f} {w:.2f} {l:.2f} {x:.2f} {y:.2f} {z:.2f} {objs.rotation_y[i]:.2f}")
        if objs.score is not None:
            s += f" {objs.score[i]:.4f}"
        out.append(s)
    return "\n".join(out) + ("\n" if out else "")


def write_label_file(path: str | os.PathLike, objs: KittiObjects) -> None:
    atomic_write_bytes(path, format_label_lines(objs).encode())


CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")


def read_calib(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a KITTI calib file; returns P0..P3 (3x4), R0_rect (3x3), Tr_velo_to_cam, Tr_imu_to_velo (3x4)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read calib file ({e.strerror})") from None
    calib: dict[str, np.ndarray] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        try:
            calib[key.strip()] = np.array([float(v) for v in vals.split()], dtype=np.float64)
        except ValueError:
            raise InputError(f"{path}:{i}: non-numeric calib values for {key.strip()!r}") from None
    shapes = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
              "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
    for key in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if key not in calib:
            raise InputError(f"{path}: calib file lacks {key!r}, expected keys {', '.join(CALIB_KEYS)}")
    for key, shape in shapes.items():
        if key in calib:
            if calib[key].size != shape[0] * shape[1]:
                raise InputError(f"{path}: calib {key} has {calib[key].size} values, expected {shape[0] * shape[1]}")
            calib[key] = calib[key].reshape(shape)
    return calib


def format_calib(calib: dict[str, np.ndarray]) -> str:
    return "".join(f"{k}: {' '.join(f'{v:.12e}' for v in np.asarray(calib[k]).ravel())}\n"
                   for k in CALIB_KEYS if k in calib)


def write_calib(path: str | os.PathLike, calib: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, format_calib(calib).encode())


def read_velodyne(path: str | os.PathLike, num_features: int = 4) -> np.ndarray:
    """Read a KITTI velodyne .bin (float32 x, y, z, reflectance) as an (n, num_features) array."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read point cloud ({e.strerror})") from None
    rec = 4 * num_features
    if len(raw) == 0 or len(raw) % rec:
        raise InputError(f"{path}: point cloud has {len(raw)} bytes, expected a non-zero multiple of {rec} "
                         f"({num_features} float32 per point); file empty or truncated")
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, num_features).copy()


def write_velodyne(path: str | os.PathLike, points: np.ndarray) -> None:
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype=np.float32).tobytes())


def velo_to_cam_matrix(calib: dict[str, np.ndarray]) -> np.ndarray:
    """4x4 matrix R0_rect @ Tr_velo_to_cam mapping LiDAR points to rectified camera coordinates."""
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"]
    tr = np.eye(4)
    tr[:3, :4] = calib["Tr_velo_to_cam"]
    return r0 @ tr


def project_to_image(pts_cam: np.ndarray, P2: np.ndarray) -> np.ndarray:
    """Project (n,3) rectified camera points with P2 (3x4) to (n,2) pixel coordinates."""
    hom = np.concatenate([pts_cam, np.ones((len(pts_cam), 1))], axis=1) @ P2.T
    return hom[:, :2] / hom[:, 2:3]
