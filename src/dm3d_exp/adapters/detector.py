"""Build mmdet3d detectors and feed them frames: the detector-side contract of the pipeline."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
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


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file's contents. Plain tensors load with ``weights_only=True``; mmengine training
    checkpoints (and many model-zoo files) also pickle optimizer / message-hub objects, which torch >= 2.6
    refuses by default: those are loaded with ``weights_only=False`` — only load files you trust."""
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {str(path)!r} does not exist (expected a .pth file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"checkpoint {str(path)!r} is not a readable torch file ({e.__class__.__name__})") from None


def build_detector(config, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> nn.Module:
    """mmdet3d model from ``config`` with weights from ``checkpoint`` (strict: no missing/unexpected keys)."""
    setup_mmdet3d()
    from mmdet3d.registry import MODELS
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    cfg = load_config(config)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        _load_checkpoint_to_model(model, read_checkpoint(checkpoint), strict=True, logger="silent")
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
