"""Build mmdet3d detectors and feed them frames: the detector-side contract of the pipeline."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .checkpoint import load_state_strict, read_checkpoint_file
from .runtime import setup_mmdet3d


def mmdet3d_config_dir() -> Path:
    """The config tree shipped inside the installed mmdet3d package (``.mim/configs``)."""
    import mmdet3d

    return Path(mmdet3d.__file__).parent / ".mim" / "configs"


def load_config(config):
    """mmengine Config from a path (``mmdet3d::`` prefix = inside mmdet3d's shipped configs) or a Config."""
    from mmengine.config import Config

    if isinstance(config, Config):
        return config
    path = str(config)
    if path.startswith("mmdet3d::"):
        path = str(mmdet3d_config_dir() / path[len("mmdet3d::"):])
    if not os.path.isfile(path):
        raise InputError(f"detector config {path!r} does not exist (expected an mmdet3d .py config file)")
    return Config.fromfile(path)


def _rebase(node, old: str, new: str):
    """Copy of a config tree with every string that starts with ``old`` starting with ``new`` instead."""
    if isinstance(node, str):
        return new + node[len(old):] if node.startswith(old) else node
    if isinstance(node, dict):
        return type(node)({k: _rebase(v, old, new) for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        return type(node)(_rebase(v, old, new) for v in node)
    return node


def rebase_data_root(cfg, data_root: str | os.PathLike):
    """Copy of an mmengine Config whose strings under its top-level ``data_root`` (dataset roots, info
    files, the GT database, the evaluator's ann_file) point under ``data_root`` instead."""
    from mmengine.config import Config

    old = cfg.get("data_root")
    if not old:
        raise InputError(f"{cfg.filename}: has no top-level data_root to replace")
    new = str(Path(data_root).absolute()) + "/"
    rebased = _rebase(cfg.to_dict(), old, new)
    rebased["data_root"] = new
    return Config(rebased, filename=cfg.filename)


def build_detector(config, checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                   trust: bool = False) -> nn.Module:
    """mmdet3d model from ``config`` with weights from ``checkpoint`` (strict: a missing / unexpected key is one
    InputError naming the keys and the config). The file is read by ``checkpoint.read_checkpoint_file``: never
    unpickled beyond torch's weights-only loader and a data-only allow-list unless ``trust`` (which runs any
    code the file contains: only for files from a trusted source)."""
    setup_mmdet3d()
    from mmdet3d.registry import MODELS

    cfg = load_config(config)
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmdet3d"):  # another library may have set its own scope
        model = MODELS.build(cfg.model)
    if checkpoint is not None:
        expected = f"detector config {getattr(cfg, 'filename', None) or '<in-memory>'!r} (model {cfg.model.type})"
        load_state_strict(model, read_checkpoint_file(checkpoint, trust=trust), checkpoint, expected)
    model.cfg = cfg
    return model.to(device).eval()


def points_batch(model: nn.Module, points: Sequence[np.ndarray | torch.Tensor], metas: Sequence[dict] | None = None):
    """Preprocessed (inputs, data_samples) for raw LiDAR point arrays, via the model's data_preprocessor."""
    from mmdet3d.structures import Det3DDataSample

    samples = []
    for i in range(len(points)):
        s = Det3DDataSample()
        s.set_metainfo(dict(metas[i]) if metas else {"box_type_3d": _lidar_box_type(), "sample_idx": i})
        samples.append(s)
    device = next(model.parameters()).device
    pts = [torch.as_tensor(np.asarray(p), dtype=torch.float32, device=device) for p in points]
    data = model.data_preprocessor({"inputs": {"points": pts}, "data_samples": samples}, training=False)
    return data["inputs"], data["data_samples"]


def _lidar_box_type():
    from mmdet3d.structures import LiDARInstance3DBoxes

    return LiDARInstance3DBoxes
