"""`dm3d` with the model-zoo nuScenes CenterPoint (He-normal random weights: the tests are about the path,
not the mAP) on a nuScenes-format root, every stage at the smallest sizes; returns the job's summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ZOO = "mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py"


def run_zoo_centerpoint(root: Path, tmp_path: Path, *extra: str) -> dict:
    import torch

    from dm3d_exp.adapters.checkpoint import save_checkpoint
    from dm3d_exp.adapters.detector import build_detector
    from dm3d_exp.adapters.layers import he_normal_

    torch.manual_seed(0)
    ckpt = save_checkpoint(he_normal_(build_detector(ZOO)), tmp_path / "cp.pth")
    cmd = [sys.executable, "-c", "from dm3d_exp.cli import main; main()", "dataset=nuscenes", f"dataset.root={root}",
           "detector=centerpoint_voxel_nus", f"detector.checkpoint={ckpt}", "pruning=dm3d",
           "pruning.flops_target=0.5", "recovery=none", "sensitivity=fisher", "sensitivity.num_levels=20",
           "calib.num_frames=1", "calib.reference_frames=1", "threads=1", "progress=false", "tracking=off",
           f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "run" / "summary.json").read_text())
