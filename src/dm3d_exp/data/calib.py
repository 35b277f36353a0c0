"""Fixed KITTI-like sensor calibration of the synthetic dataset.

The matrices are the KITTI object-benchmark calibration of recording day 2011_09_26 (as in KITTI
training frame 000000, ``../shared/data/kitti_real_frames/training/calib/000000.txt``): Point Grey
camera 2 (left colour) with a 1242x375 rectified image, Velodyne HDL-64E mounted 1.73 m above the
ground (the camera 1.65 m). Every synthetic frame uses this calibration.
"""
from __future__ import annotations

import functools

import numpy as np

from ..kitti.format import project_to_image, velo_to_cam_matrix

IMAGE_WIDTH = 1242
IMAGE_HEIGHT = 375
LIDAR_HEIGHT_M = 1.73

_P0 = [707.0493, 0.0, 604.0814, 0.0, 0.0, 707.0493, 180.5066, 0.0, 0.0, 0.0, 1.0, 0.0]
_P1 = [707.0493, 0.0, 604.0814, -379.7842, 0.0, 707.0493, 180.5066, 0.0, 0.0, 0.0, 1.0, 0.0]
_P2 = [707.0493, 0.0, 604.0814, 45.75831, 0.0, 707.0493, 180.5066, -0.3454157, 0.0, 0.0, 1.0, 0.004981016]
_P3 = [707.0493, 0.0, 604.0814, -334.1081, 0.0, 707.0493, 180.5066, 2.33066, 0.0, 0.0, 1.0, 0.003201153]
_R0_RECT = [0.9999128, 0.01009263, -0.008511932, -0.01012729, 0.9999406, -0.004037671,
            0.008470675, 0.004123522, 0.9999556]
_TR_VELO_TO_CAM = [0.006927964, -0.9999722, -0.002757829, -0.02457729, -0.001162982, 0.002749836,
                   -0.9999955, -0.06127237, 0.9999753, 0.006931141, -0.001143899, -0.3321029]
_TR_IMU_TO_VELO = [0.9999976, 0.0007553071, -0.002035826, -0.8086759, -0.0007854027, 0.9998898,
                   -0.01482298, 0.3195559, 0.002024406, 0.01482454, 0.9998881, -0.7997231]


def kitti_calib() -> dict[str, np.ndarray]:
    """The calibration as ``read_calib`` returns it: P0..P3, Tr_velo_to_cam, Tr_imu_to_velo (3x4), R0_rect (3x3)."""
    return {
        "P0": np.array(_P0).reshape(3, 4), "P1": np.array(_P1).reshape(3, 4),
        "P2": np.array(_P2).reshape(3, 4), "P3": np.array(_P3).reshape(3, 4),
        "R0_rect": np.array(_R0_RECT).reshape(3, 3),
        "Tr_velo_to_cam": np.array(_TR_VELO_TO_CAM).reshape(3, 4),
        "Tr_imu_to_velo": np.array(_TR_IMU_TO_VELO).reshape(3, 4),
    }


def lidar_to_cam(points: np.ndarray, calib: dict[str, np.ndarray]) -> np.ndarray:
    """Map (n, 3) LiDAR points to rectified camera coordinates."""
    t = velo_to_cam_matrix(calib)
    return points[:, :3] @ t[:3, :3].T + t[:3, 3]


@functools.lru_cache(maxsize=16)
def _inverse(matrix_bytes: bytes) -> np.ndarray:
    return np.linalg.inv(np.frombuffer(matrix_bytes).reshape(4, 4))


def cam_to_lidar(points: np.ndarray, calib: dict[str, np.ndarray]) -> np.ndarray:
    """Map (n, 3) rectified camera points to LiDAR coordinates."""
    t = _inverse(np.ascontiguousarray(velo_to_cam_matrix(calib), dtype=np.float64).tobytes())
    return points[:, :3] @ t[:3, :3].T + t[:3, 3]


def image_fov_mask(points: np.ndarray, calib: dict[str, np.ndarray], width: int = IMAGE_WIDTH,
                   height: int = IMAGE_HEIGHT, max_depth: float = 100.0) -> np.ndarray:
    """Boolean mask of LiDAR points that project into the camera-2 image.

    Same criterion as KITTI's ``velodyne_reduced`` clouds (mmdet3d ``remove_outside_points``): depth in
    (0.001, max_depth] metres and the projection inside ``[0, width) x [0, height)``.
    """
    cam = lidar_to_cam(points, calib)
    depth = cam[:, 2]
    ok = (depth > 1e-3) & (depth <= max_depth)
    uv = np.full((len(points), 2), -1.0)
    uv[ok] = project_to_image(cam[ok], calib["P2"])
    return ok & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
