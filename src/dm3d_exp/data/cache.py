"""Dataset cache: generate the synthetic dataset once, publish it atomically, reuse it while it matches.

Default location ``${XDG_CACHE_HOME:-~/.cache}/dm3d-exp/datasets/synthetic_kitti-<digest>``, the digest
covering the generator version and all parameters. Published by :func:`dm3d_exp.publish.publish_dir`: generated
in a temporary directory beside the target under an exclusive lock (``.<name>.lock``), so concurrent
processes generate it only once, then renamed into place, so a dataset directory is either complete
(with ``manifest.json``) or absent.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..publish import publish_dir
from .params import GENERATOR_VERSION, SynthParams
from .writer import generate_dataset

MANIFEST = "manifest.json"


def default_cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/dm3d-exp/datasets``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dm3d-exp" / "datasets"


def dataset_dir(params: SynthParams, cache_root: str | os.PathLike | None = None) -> Path:
    """Cache directory of the dataset described by ``params``."""
    return Path(cache_root or default_cache_root()) / f"synthetic_kitti-{params.digest()}"


def read_manifest(root: str | os.PathLike) -> dict:
    """Load ``root/manifest.json``; InputError naming the file when it is missing or unreadable."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise InputError(f"{root}: dataset directory does not exist")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; {root} is not a complete synthetic dataset") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or "params" not in manifest or "generator_version" not in manifest:
        raise InputError(f"{path}: not a synthetic dataset manifest (no generator_version/params)")
    return manifest


def check_dataset(root: str | os.PathLike) -> dict:
    """Check that a generated dataset is complete (files present, clouds non-empty whole records).

    Returns the manifest; raises InputError naming the first missing, empty or truncated file.
    """
    root = Path(root)
    manifest = read_manifest(root)
    params = SynthParams.from_dict(manifest["params"])
    required = [root / f"kitti_infos_{s}.pkl" for s in ("train", "val", "trainval")]
    required += [root / "kitti_dbinfos_train.pkl"] + [root / "ImageSets" / f"{s}.txt" for s in ("train", "val")]
    tr = root / "training"
    for i in range(params.num_frames):
        fid = f"{i:06d}"
        required += [tr / "label_2" / f"{fid}.txt", tr / "calib" / f"{fid}.txt"]
        for cloud in (tr / "velodyne" / f"{fid}.bin", tr / "velodyne_reduced" / f"{fid}.bin"):
            try:
                size = cloud.stat().st_size
            except OSError:
                raise InputError(f"{cloud}: missing point cloud; dataset {root} is incomplete") from None
            if size == 0 or size % 16:
                raise InputError(f"{cloud}: point cloud has {size} bytes, expected a non-zero multiple of 16 "
                                 f"(4 float32 per point); file empty or truncated")
    for path in required:
        if not path.is_file():
            raise InputError(f"{path}: missing; dataset {root} is incomplete")
    return manifest


def _matches(root: Path, params: SynthParams) -> bool:
    """True when ``root`` holds a complete dataset of ``params``; InputError when it holds something else."""
    if not root.exists():
        return False
    if root.is_dir() and not any(root.iterdir()):
        return False
    manifest = read_manifest(root)
    if manifest["generator_version"] != GENERATOR_VERSION or manifest["params"] != params.to_dict():
        raise InputError(f"{root}: holds a synthetic dataset of generator version {manifest['generator_version']} "
                         f"with other parameters ({manifest['params']}); expected version {GENERATOR_VERSION} "
                         f"with {params.to_dict()}; delete it or choose another directory")
    check_dataset(root)
    return True


def ensure_dataset(params: SynthParams | None = None, root: str | os.PathLike | None = None,
                   workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Path of a complete dataset for ``params`` (default parameters when None), generating it if needed.

    ``root`` defaults to ``dataset_dir(params)`` in the cache. An existing complete dataset with the same
    generator version and parameters is reused; a directory holding anything else raises InputError.
    """
    params = params or SynthParams()
    root = Path(root) if root is not None else dataset_dir(params)
    root = root.expanduser().absolute()
    publish_dir(root, lambda tmp: generate_dataset(params, tmp, workers=workers, progress=progress),
                lambda d: _matches(d, params))
    return root
