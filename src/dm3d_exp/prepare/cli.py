"""``dm3d-prepare kitti ROOT OUT [--val-every N]`` / ``dm3d-prepare nuscenes ROOT OUT [--version V]
[--max-sweeps N]``: a real dataset root prepared for dm3d (mmdet3d infos v2, GT database; KITTI's
velodyne_reduced) through mmdet3d's converters; see :mod:`dm3d_exp.prepare.kitti`, :mod:`.nuscenes`."""
from __future__ import annotations

import argparse
import sys

from ..errors import InputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dm3d-prepare", description="Prepare a real dataset root for dm3d.")
    sub = p.add_subparsers(dest="dataset", required=True)
    k = sub.add_parser("kitti", help="KITTI object detection (training/ with calib, label_2, velodyne)")
    k.add_argument("root", help="KITTI root holding training/ (read only; never written)")
    k.add_argument("out", help="prepared root to write (then: dm3d dataset=kitti dataset.root=OUT ...)")
    k.add_argument("--val-every", type=int, default=None,
                   help="every n-th frame to val, the rest to train (default: the root's ImageSets/{train,val}.txt)")
    n = sub.add_parser("nuscenes", help="nuScenes (v1.0-* tables, samples/, sweeps/, maps/)")
    n.add_argument("root", help="nuScenes root (read only; never written)")
    n.add_argument("out", help="prepared root to write (then: dm3d dataset=nuscenes dataset.root=OUT ...)")
    n.add_argument("--version", default=None, help="table folder, e.g. v1.0-mini (default: the root's only v1.0-*)")
    n.add_argument("--max-sweeps", type=int, default=10, help="LIDAR_TOP sweeps per key frame in the infos (0..10)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dataset == "kitti":
            from .kitti import prepare_kitti

            prepare_kitti(args.root, args.out, val_every=args.val_every)
        else:
            from .nuscenes import prepare_nuscenes

            prepare_nuscenes(args.root, args.out, version=args.version, max_sweeps=args.max_sweeps)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
