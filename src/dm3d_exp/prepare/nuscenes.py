"""Prepare a nuScenes root for dm3d through mmdet3d's own converter functions.

What ``tools/create_data.py nuscenes`` does, with its traps handled: the converters come from mmdet3d's
installed ``.mim/tools`` (no PYTHONPATH); the source root is never written (the output links to its
``samples/``, ``sweeps/``, ``maps/`` and table folder); mmdet3d's v2 update opens the tables at the fixed
path ``./data/nuscenes`` whatever its arguments say, so it runs in a scratch directory where that path
links to the output; the v1.0 tables, every LIDAR_TOP file they name and a non-empty train and val split
(the official scene lists of the version) are checked first, one line naming what is missing. Steps: v1
infos (create_nuscenes_infos, ``max_sweeps`` sweeps each), v2 infos (update_pkl_infos), GT database
(create_groundtruth_database). Built in a temporary sibling of ``out`` and renamed into place;
``dm3d_prepare.json`` records the inputs, so the same inputs again are a no-op.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import InputError
from .common import converters, prepare, quiet

VERSION = 1  # bump when the prepared layout changes
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
SPLITS = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val")}


def read_layout(root: Path, version: str | None) -> dict:
    """Version, scenes per split and LIDAR_TOP files of a nuScenes root, or one line naming what is wrong."""
    if not root.is_dir():
        raise InputError(f"nuScenes root {str(root)!r} is not a directory, expected one holding v1.0-*/ and samples/")
    found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
    if version is None:
        if len(found) != 1:
            raise InputError(f"{root} has table folders {found or 'none'}: expected exactly one v1.0-* folder, "
                             "or choose one with --version")
        version = found[0]
    if version not in SPLITS:
        raise InputError(f"--version={version!r}: expected one of {sorted(SPLITS)} (v1.0-test has no annotations)")
    tables = root / version
    for name in TABLES:
        if not (tables / f"{name}.json").is_file():
            raise InputError(f"{tables / (name + '.json')} is missing: a nuScenes {version} root needs the tables {TABLES}")
    for sub in ("samples", "sweeps", "maps"):
        if not (root / sub).is_dir():
            raise InputError(f"{root / sub} is missing: a nuScenes root needs samples/, sweeps/ and maps/")
    sensors = {s["token"]: s["channel"] for s in json.loads((tables / "sensor.json").read_text())}
    lidar_cs = {c["token"] for c in json.loads((tables / "calibrated_sensor.json").read_text())
                if sensors.get(c["sensor_token"]) == "LIDAR_TOP"}
    lidar = [d["filename"] for d in json.loads((tables / "sample_data.json").read_text())
             if d["calibrated_sensor_token"] in lidar_cs]
    missing = [f for f in lidar if not (root / f).is_file()]
    if missing:
        raise InputError(f"{root / missing[0]} is missing ({len(missing)} of the {len(lidar)} LIDAR_TOP files "
                         f"{version}/sample_data.json names)")
    from nuscenes.utils import splits as official

    scenes = {s["name"] for s in json.loads((tables / "scene.json").read_text())}
    split_scenes = {}
    for split, listed in zip(("train", "val"), SPLITS[version]):
        split_scenes[split] = sorted(scenes & set(getattr(official, listed)))
        if not split_scenes[split]:
            raise InputError(f"{tables / 'scene.json'} has no scene of the official {version} {split} split "
                             f"({listed}: {', '.join(getattr(official, listed)[:3])}, ...), expected at least one")
    return {"version": version, "scenes": split_scenes, "lidar_files": len(lidar)}


def _fingerprint(root: Path, layout: dict, max_sweeps: int) -> dict:
    """What the prepared output depends on: the tables' and LIDAR files' sizes and mtimes, version, sweeps."""
    h = hashlib.sha256()
    for path in sorted((root / layout["version"]).glob("*.json")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return {"version": VERSION, "root": str(root.resolve()), "nuscenes_version": layout["version"],
            "tables": h.hexdigest(), "max_sweeps": max_sweeps, "scenes": layout["scenes"]}


@contextlib.contextmanager
def _cwd_with_data_nuscenes(stage: Path):
    """A scratch working directory whose ``data/nuscenes`` links to ``stage`` (mmdet3d's v2 update opens
    the tables there, whatever out_dir it is given)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=".dm3d-nus-cwd-") as scratch:
        (Path(scratch) / "data").mkdir()
        os.symlink(stage, Path(scratch) / "data" / "nuscenes")
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(old)


def _build(stage: Path, root: Path, layout: dict, max_sweeps: int) -> dict:
    """Linked source folders, infos v1 -> v2 for train and val, GT database; returns the manifest's record."""
    nuscenes_converter, update_infos_to_v2, create_gt_database = converters(
        "nuscenes_converter", "update_infos_to_v2", "create_gt_database")
    for sub in ("samples", "sweeps", "maps", layout["version"]):
        os.symlink(root.resolve() / sub, stage / sub)
    with quiet():
        nuscenes_converter.create_nuscenes_infos(str(stage), "nuscenes", version=layout["version"],
                                                 max_sweeps=max_sweeps)
        with _cwd_with_data_nuscenes(stage):
            for split in ("train", "val"):
                update_infos_to_v2.update_pkl_infos("nuscenes", out_dir=str(stage),
                                                    pkl_path=str(stage / f"nuscenes_infos_{split}.pkl"))
        create_gt_database.create_groundtruth_database("NuScenesDataset", str(stage), "nuscenes",
                                                       "nuscenes_infos_train.pkl")
    return {"lidar_files": layout["lidar_files"]}


def prepare_nuscenes(root: str | os.PathLike, out: str | os.PathLike, version: str | None = None,
                     max_sweeps: int = 10, log=print) -> Path:
    """Prepare the nuScenes root ``root`` into ``out`` (infos v2 for train/val with ``max_sweeps`` sweeps,
    GT database); returns ``out``. Idempotent: the same inputs again leave ``out`` as it is."""
    root, out = Path(root), Path(out)
    if not 0 <= max_sweeps <= 10:
        raise InputError(f"--max-sweeps={max_sweeps}: expected 0..10 (mmdet3d's nuScenes configs use 10)")
    layout = read_layout(root, version)
    fingerprint = _fingerprint(root, layout, max_sweeps)
    counts = ", ".join(f"{len(v)} {k} scene(s)" for k, v in layout["scenes"].items())
    if prepare(out, fingerprint, lambda stage: _build(stage, root, layout, max_sweeps), log, counts):
        log(f"prepared {out}: {layout['version']}, {counts}")
    return out
