"""Detector specs: the small Hydra yaml per detector under ``conf/detector/`` and where its files are.

A spec names an mmdet3d config file and a checkpoint. Synthetic-benchmark detectors ship both in the
repository (``conf/detector/mmdet3d/*.py``, ``checkpoints/<name>/``); model-zoo detectors point at the
configs shipped inside the installed mmdet3d package (``mmdet3d::<dir>/<file>.py`` resolves to
``<site-packages>/mmdet3d/.mim/configs/<dir>/<file>.py``) and need the user's checkpoint and dataset root
(``???`` in the yaml: OmegaConf's mandatory value).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import InputError

MMDET3D_PREFIX = "mmdet3d::"
_FIELDS = ("name", "mmdet3d_config", "checkpoint", "classes", "point_cloud_range")


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
    """A resolved detector entry: absolute config path, checkpoint (or None) and optional dataset root."""

    name: str
    config: Path
    checkpoint: Path | None
    classes: tuple[str, ...]
    point_cloud_range: tuple[float, ...]
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


def resolve_detector(conf: DictConfig | dict | str, require_checkpoint: bool = True) -> DetectorSpec:
    """Check a detector entry (a name or its yaml content) and resolve its files.

    Raises InputError with one line naming the missing or wrong field: an unset (``???``) or absent
    checkpoint / dataset root, a missing config or checkpoint file. ``require_checkpoint=False`` accepts
    ``checkpoint: null`` (a detector about to be trained).
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
    for key in ("mmdet3d_config", "checkpoint", "data_root"):
        if key in present and OmegaConf.is_missing(conf, key):
            if key == "checkpoint" and not require_checkpoint:
                continue
            raise InputError(f"detector {name}: {key} is required (pass detector.{key}=PATH)")
    config = _resolve_path(str(conf.mmdet3d_config))
    if not config.is_file():
        raise InputError(f"detector {name}: mmdet3d config {config} does not exist")
    checkpoint = None
    if not OmegaConf.is_missing(conf, "checkpoint") and conf.checkpoint is not None:
        checkpoint = _resolve_path(str(conf.checkpoint))
    if checkpoint is None and require_checkpoint:
        raise InputError(f"detector {name}: checkpoint is null; train it first (make train-reference "
                         f"DETECTOR={name}) or pass detector.checkpoint=PATH")
    if checkpoint is not None and require_checkpoint and not checkpoint.is_file():
        hint = "" if "data_root" in present else f" (train it: make train-reference DETECTOR={name})"
        raise InputError(f"detector {name}: checkpoint {checkpoint} does not exist{hint}")
    data_root = None
    if "data_root" in present and not OmegaConf.is_missing(conf, "data_root") and conf.data_root is not None:
        data_root = _resolve_path(str(conf.data_root))
        if not data_root.is_dir():
            raise InputError(f"detector {name}: data_root {data_root} is not a directory")
    return DetectorSpec(str(name), config, checkpoint, tuple(conf.classes),
                        tuple(float(v) for v in conf.point_cloud_range), data_root)
