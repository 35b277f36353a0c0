"""``dm3d-prepare kitti ROOT OUT [--val-every N]``: a real KITTI root prepared for dm3d (mmdet3d infos v2,
velodyne_reduced, GT database) through mmdet3d's converters; see :mod:`dm3d_exp.prepare.kitti`."""
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .kitti import prepare_kitti

    try:
        prepare_kitti(args.root, args.out, val_every=args.val_every)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
