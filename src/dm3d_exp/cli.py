"""Console entry points. Each returns/raises SystemExit with 0 on success and 2 on bad input."""
from __future__ import annotations

import sys


def _run(entry, argv=None) -> None:
    sys.exit(entry(argv))


def synth_main(argv=None) -> None:
    """`dm3d-synth`: generate (or reuse) the synthetic KITTI-format benchmark; realism report."""
    from .data.cli import main

    _run(main, argv)


def kitti_eval_main(argv=None) -> None:
    """`dm3d-kitti-eval GT_DIR DET_DIR --out results.json`: official-devkit-equivalent KITTI AP."""
    from .kitti.eval_cli import main

    _run(main, argv)


def main() -> None:
    """`dm3d`: the Hydra app (calibrate -> sensitivity -> allocate -> prune -> evaluate)."""
    from .pipeline.app import main as app_main

    app_main()


def report_main(argv=None) -> None:
    """`dm3d-report`: method x target table and mAP-vs-FLOPs plot from MLflow."""
    from .pipeline.report import main

    _run(main, argv)


def train_main(argv=None) -> None:
    """`dm3d-train`: train a reference detector on the synthetic benchmark."""
    from .training.cli import main

    _run(main, argv)


def prepare_main(argv=None) -> None:
    """`dm3d-prepare kitti ROOT OUT`: a real KITTI root prepared through mmdet3d's converters."""
    from .prepare.cli import main

    _run(main, argv)
