"""Detector specs: the small Hydra yaml per detector under ``conf/detector/`` and where its files are.

A spec names an mmdet3d config file and a checkpoint. Synthetic-benchmark detectors ship both in the
repository (``conf/detector/mmdet3d/*.py``, ``checkpoints/<name>/``) and generate their dataset; model-zoo
detectors point at the configs shipped inside the installed mmdet3d package (``mmdet3d::<dir>/<file>.py``
resolves to ``<site-packages>/mmdet3d/.mim/configs/<dir>/<file>.py``) and need the user's checkpoint
(``checkpoint: ???``, OmegaConf's mandatory value) and dataset root (``dataset.root`` in the run config).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import InputError

MMDET3D_PREFIX = "mmdet3d::"
_FIELDS = ("name", "mmdet3d_config", "checkpoint")


def repo_root() -> Path:
    """The project checkout (parent of ``src/``): relative paths in detector specs start here."""
    return Path(__file__).resolve().parents[3]


def detector_conf_dir() -> Path:
    """``conf/detector`` of the checkout."""
    return repo_root() / "conf" / "detector"


def available_detectors() -> list[str]:
    """Names of the detector yaml files in ``conf/detector``."""
    return sorted(p.stem for p in detector_conf_dir().glob("*.yaml"))


@dataclass(frozen=True)
class DetectorSpec:
    """A resolved detector entry: absolute config path, checkpoint (or None) and dataset root (or None)."""

    name: str
    config: Path
    checkpoint: Path | None
    data_root: Path | None = None


def _resolve_path(value: str) -> Path:
    if value.startswith(MMDET3D_PREFIX):
        import mmdet3d

        return Path(mmdet3d.__file__).parent / ".mim" / "configs" / value[len(MMDET3D_PREFIX):]
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else repo_root() / path


def load_detector_conf(name: str) -> DictConfig:
    """The raw yaml of detector ``name`` (``conf/detector/<name>.yaml``); InputError when unknown."""
    path = detector_conf_dir() / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"detector={name!r} is unknown, expected one of {', '.join(available_detectors())}")
    return OmegaConf.load(path)


def resolve_detector(conf: DictConfig | dict | str, require_checkpoint: bool = True,
                     data_root: str | os.PathLike | None = None) -> DetectorSpec:
    """Check a detector entry (a name or its yaml content) and resolve its files.

    Raises InputError with one line naming what is missing or wrong: an unset (``???``) or null
    checkpoint, a missing config or checkpoint file, or, for model-zoo entries, no ``data_root`` (their
    dataset is the user's, not generated). ``require_checkpoint=False`` accepts a checkpoint that is
    null, unset or not yet written (a detector about to be trained).
    """
    if isinstance(conf, str):
        conf = load_detector_conf(conf)
    if not isinstance(conf, DictConfig):
        conf = OmegaConf.create(conf)
    name = conf.get("name") or "<unnamed>"
    present = set(conf.keys())  # `key in conf` is False for ??? values
    for key in _FIELDS:
        if key not in present:
            raise InputError(f"detector {name}: field {key!r} is missing from its yaml")
    if OmegaConf.is_missing(conf, "mmdet3d_config"):
        raise InputError(f"detector {name}: mmdet3d_config is required (pass detector.mmdet3d_config=PATH)")
    zoo = str(conf.mmdet3d_config).startswith(MMDET3D_PREFIX)
    config = _resolve_path(str(conf.mmdet3d_config))
    if not config.is_file():
        raise InputError(f"detector {name}: mmdet3d config {config} does not exist")
    checkpoint = None
    if OmegaConf.is_missing(conf, "checkpoint"):
        if require_checkpoint:
            raise InputError(f"detector {name}: checkpoint is required (pass detector.checkpoint=PATH)")
    elif conf.checkpoint is not None:
        checkpoint = _resolve_path(str(conf.checkpoint))
    if require_checkpoint:
        hint = "" if zoo else f" (train it: make train-reference DETECTOR={name})"
        if checkpoint is None:
            raise InputError(f"detector {name}: checkpoint is null{hint}, or pass detector.checkpoint=PATH")
        if not checkpoint.is_file():
            raise InputError(f"detector {name}: checkpoint {checkpoint} does not exist{hint}")
    if data_root is None and zoo:
        raise InputError(f"detector {name}: needs the dataset root its checkpoint is evaluated on "
                         f"(pass dataset.root=PATH, a root prepared by dm3d-prepare kitti, or mmdet3d's tools/create_data.py for nuScenes)")
    root = None
    if data_root is not None:
        root = Path(os.path.expanduser(str(data_root))).absolute()
        if not root.is_dir():
            raise InputError(f"detector {name}: dataset root {root} is not a directory")
    return DetectorSpec(str(name), config, checkpoint, root)
