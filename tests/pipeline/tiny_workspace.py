"""The tiny end-to-end workspace (4 train / 3 val synthetic frames, a random-init tiny PointPillars) and
the `dm3d` command line that runs on it: shared by the slow end-to-end test modules."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "pipeline" / "tiny_pointpillars_synth.py"
DM3D = [sys.executable, "-c", "from dm3d_exp.cli import main; main()"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def make_workspace(root: Path) -> tuple[Path, Path, Path]:
    """(root, dataset dir, checkpoint) under ``root``."""
    from dm3d_exp.adapters.checkpoint import save_checkpoint
    from dm3d_exp.adapters.detector import build_detector
    from dm3d_exp.data.cache import ensure_dataset
    from dm3d_exp.data.params import SynthParams

    data = ensure_dataset(SynthParams(num_train=4, num_val=3, seed=5), root=root / "data")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_detector(str(TINY)), root / "tiny.pth")
    return root, data, ckpt


def dm3d_command(workspace, *overrides) -> list[str]:
    """The `dm3d` command on the workspace (its own cache; recovery=none unless a recovery is given: the
    tiny detector's wide layers have fewer samples than inputs); ``--flags`` go before the overrides."""
    root, data, ckpt = workspace
    flags = [o for o in overrides if o.startswith("--")]
    overrides = [o for o in overrides if not o.startswith("--")]
    if not any(o.startswith("recovery=") for o in overrides):
        overrides.append("recovery=none")
    return [*DM3D, *flags, "detector=pointpillars_synth", f"detector.mmdet3d_config={TINY}",
            f"detector.checkpoint={ckpt}", f"dataset.root={data}", f"cache_dir={root / 'cache'}",
            "calib.num_frames=2", "calib.reference_frames=2", "sensitivity.num_levels=20",
            "eval.distortion_frames=2", "progress=false", *overrides]


def run_dm3d(workspace, cwd, *overrides, env=None) -> subprocess.CompletedProcess:
    """Run `dm3d` to completion; asserts exit 0."""
    proc = subprocess.run(dm3d_command(workspace, *overrides), cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**ENV, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
