"""`dm3d-kitti-eval GT_LABEL_DIR DET_DIR --out results.json`: official-devkit-equivalent KITTI AP.

Prints a compact table (AP_R40 / AP_R11 per class, metric and difficulty) and writes the flat JSON
``{"Class/metric/difficulty/R40|R11": AP in percent}`` atomically to ``--out``. Bad input (missing result
files, malformed label lines, unknown class names, empty directories) prints ``error: <message>`` to
stderr and returns 2 without writing ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import InputError
from .eval import CLASSES, DIFFICULTIES, METRICS, evaluate_dirs, read_frame_ids
from .format import atomic_write_bytes


def format_table(results: dict[str, float]) -> str:
    """Rows ``Class metric``, columns ``easy/moderate/hard`` as ``R40 / R11``."""
    rows = []
    seen = []
    for key in results:
        cls, metric = key.split("/")[:2]
        if (cls, metric) not in seen:
            seen.append((cls, metric))
    order = {m: i for i, m in enumerate(METRICS)}
    seen.sort(key=lambda cm: (CLASSES.index(cm[0]) if cm[0] in CLASSES else 99, order.get(cm[1], 99)))
    head = f"{'class':<11}{'metric':<7}" + "".join(f"{d + ' R40/R11':>20}" for d in DIFFICULTIES)
    rows.append(head)
    rows.append("-" * len(head))
    for cls, metric in seen:
        cells = []
        for d in DIFFICULTIES:
            r40 = results.get(f"{cls}/{metric}/{d}/R40")
            r11 = results.get(f"{cls}/{metric}/{d}/R11")
            cells.append(f"{'-' if r40 is None else f'{r40:.2f}':>11} / {'-' if r11 is None else f'{r11:.2f}':<6}")
        rows.append(f"{cls:<11}{metric:<7}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(rows)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dm3d-kitti-eval",
        description="KITTI 2D/BEV/3D/AOS AP (R40 and R11) equivalent to the official devkit evaluate_object.cpp.")
    p.add_argument("gt_dir", metavar="GT_LABEL_DIR", help="ground-truth label_2 directory (<id>.txt, 15 fields)")
    p.add_argument("det_dir", metavar="DET_DIR", help="detection results directory (<id>.txt, 16 fields with score)")
    p.add_argument("--out", help="write the results JSON here (atomically)")
    p.add_argument("--classes", default=",".join(CLASSES),
                   help=f"comma-separated classes to evaluate (default {','.join(CLASSES)})")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated metrics (default {','.join(METRICS)})")
    p.add_argument("--frames", metavar="FILE", help="ImageSets-style file with the frame ids to evaluate "
                                                     "(default: every .txt in GT_LABEL_DIR)")
    p.add_argument("--report-undetected", action="store_true",
                   help="report classes without any detection as 0 AP (the devkit skips them)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        frame_ids = read_frame_ids(args.frames) if args.frames else None
        t0 = time.perf_counter()
        results = evaluate_dirs(args.gt_dir, args.det_dir, frame_ids, classes=_csv(args.classes),
                                metrics=_csv(args.metrics), report_undetected=args.report_undetected)
        elapsed = time.perf_counter() - t0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    print(f"({len(results)} values, {elapsed:.1f} s)")
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
