"""``dm3d-synth``: generate (or reuse) the synthetic KITTI-like dataset and optionally compare it with real KITTI."""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from .cache import dataset_dir, ensure_dataset
from .params import SynthParams
from .realism import realism_report


@contextmanager
def _progress_bar(enabled: bool):
    """Yield a ``progress(done, total)`` callback drawing a tqdm (or rich) bar on stderr, if importable."""
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="frame", desc="generating", file=sys.stderr)
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            if bar is not None:
                bar.close()
        return
    try:
        from rich.progress import Progress
    except ImportError:
        yield None
        return
    with Progress(transient=True) as prog:
        task = prog.add_task("generating", total=None)

        def update_rich(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update_rich


def _parser() -> argparse.ArgumentParser:
    d = SynthParams()
    p = argparse.ArgumentParser(
        prog="dm3d-synth",
        description="Generate the synthetic KITTI-like LiDAR dataset (KITTI layout + mmdet3d infos + GT database), "
                    "or reuse it when the cached copy matches.")
    p.add_argument("--out", type=Path, help="dataset directory (default: the cache, "
                   "${XDG_CACHE_HOME:-~/.cache}/dm3d-exp/datasets/synthetic_kitti-<hash>)")
    p.add_argument("--num-train", type=int, default=d.num_train, help=f"training frames (default {d.num_train})")
    p.add_argument("--num-val", type=int, default=d.num_val, help=f"validation frames (default {d.num_val})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=None, help="generator processes (default: all CPUs)")
    p.add_argument("--compare-real", type=Path, metavar="DIR",
                   help="real KITTI root (training/{velodyne|velodyne_reduced,label_2,calib}) to compare point "
                        "densities with, e.g. ../shared/data/kitti_real_frames")
    p.add_argument("--report-out", type=Path, metavar="DIR", default=Path("outputs/synth_realism"),
                   help="where --compare-real writes realism.json and realism.png (default outputs/synth_realism)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dm3d-synth``; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.workers is not None and args.workers < 1:
            raise InputError(f"--workers={args.workers} is invalid, expected an integer >= 1")
        params = SynthParams(num_train=args.num_train, num_val=args.num_val, seed=args.seed)
        root = args.out if args.out is not None else dataset_dir(params)
        with _progress_bar(not args.no_progress and sys.stderr.isatty()) as progress:
            root = ensure_dataset(params, root=root, workers=args.workers, progress=progress)
        print(f"dataset: {root}")
        if args.compare_real is not None:
            rep = realism_report(root, args.compare_real, out_dir=args.report_out)
            print(f"realism report: {args.report_out / 'realism.json'}, {args.report_out / 'realism.png'}")
            e = rep["range_bin_edges_m"]
            print("points per range bin, synthetic/real: " + ", ".join(
                f"{e[i]:.0f}-{e[i + 1]:.0f} m {r:.2f}" for i, r in enumerate(rep["range_ratio"])
                if r is not None and e[i] >= rep["compared_range_m"][0] and e[i + 1] <= rep["compared_range_m"][1]))
            o = rep["object_bin_edges_m"]
            print("points per object, synthetic/real: " + ", ".join(
                f"{o[i]:.0f}-{o[i + 1]:.0f} m {'n/a' if r is None else f'{r:.2f}'}"
                for i, r in enumerate(rep["object_ratio"])))
            print(f"within factor {rep['max_ratio']} in every bin: {'yes' if rep['within_bound'] else 'no'}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
