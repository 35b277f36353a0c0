"""mmdet3d datasets and preprocessed batches for a detector config + data root (evaluation:
:mod:`.evaluation`)."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterator, Sequence

from torch import nn

from ..errors import InputError
from .runtime import setup_mmdet3d

INFO_FILES = {"kitti": "kitti_infos_{split}.pkl", "nuscenes": "nuscenes_infos_{split}.pkl"}


def info_path(data_root: str | os.PathLike, fmt: str, split: str) -> str:
    """Path of the mmdet3d info file of ``split`` under ``data_root`` (checked to exist)."""
    path = os.path.join(str(data_root), INFO_FILES[fmt].format(split=split))
    if not os.path.isfile(path):
        raise InputError(f"{path}: info file missing, expected mmdet3d {fmt} infos for split {split!r} "
                         f"under dataset root {data_root}")
    return path


def build_dataset(cfg, data_root: str | os.PathLike, fmt: str, split: str):
    """The config's test dataset (test pipeline, no augmentation) re-rooted at ``data_root`` for ``split``."""
    setup_mmdet3d()
    from mmdet3d.registry import DATASETS

    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    if ds_cfg.type == "KittiDataset":  # keep frame ids as sample_idx: DevkitKittiMetric looks GT up by them
        ds_cfg.type = "KittiFrameIdDataset"
    ds_cfg.data_root = str(data_root)
    ds_cfg.ann_file = info_path(data_root, fmt, split)
    ds_cfg.test_mode = True
    _table_version(ds_cfg, data_root, fmt)
    return DATASETS.build(ds_cfg)


def _table_version(ds_cfg, data_root, fmt: str) -> None:
    """nuScenes: the dataset's ``version`` is the root's table folder (v1.0-mini, ...). mmdet3d's
    NuScenesDataset otherwise says v1.0-trainval whatever the root holds (its class metainfo wins over the
    info file's), and NuScenesMetric then opens tables that are not there."""
    if fmt != "nuscenes":
        return
    versions = sorted(p.name for p in Path(data_root).glob("v1.0-*") if p.is_dir())
    if len(versions) == 1:
        ds_cfg.metainfo = {**(ds_cfg.get("metainfo") or {}), "version": versions[0]}


WRAPPERS = ("RepeatDataset", "CBGSDataset", "ClassBalancedDataset")


def build_train_dataset(cfg, data_root: str | os.PathLike, fmt: str):
    """The config's training dataset (training pipeline: GT-database sampling, augmentation) re-rooted at
    ``data_root``; dataset wrappers (repeat, class balancing) are unwrapped."""
    setup_mmdet3d()
    from mmdet3d.registry import DATASETS

    from .detector import rebase_data_root

    cfg = rebase_data_root(cfg, data_root) if cfg.get("data_root") else cfg
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    while ds_cfg.type in WRAPPERS:
        ds_cfg = ds_cfg.dataset
    ds_cfg.data_root = str(data_root)
    ds_cfg.ann_file = info_path(data_root, fmt, "train")
    _table_version(ds_cfg, data_root, fmt)
    return DATASETS.build(ds_cfg)


def train_batches(model: nn.Module, dataset, indices: Sequence[int], batch_size: int, seed: int) -> Iterator[tuple]:
    """Training-pipeline ``(inputs, data_samples)`` batches of the given frames, augmentation seeded
    (mmdet3d's transforms draw from numpy's and Python's global generators)."""
    import random

    import numpy as np
    from mmengine.dataset import pseudo_collate

    random.seed(seed)
    np.random.seed(seed)
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start:start + batch_size]]
        data = model.data_preprocessor(pseudo_collate(items), training=True)
        yield data["inputs"], data["data_samples"]


def batches(model: nn.Module, dataset, indices: Sequence[int], batch_size: int = 1) -> Iterator[tuple]:
    """Preprocessed ``(inputs, data_samples)`` for the given dataset indices, in order."""
    from mmengine.dataset import pseudo_collate

    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start:start + batch_size]]
        data = model.data_preprocessor(pseudo_collate(items), training=False)
        yield data["inputs"], data["data_samples"]
