"""Prepare a KITTI object-detection root for dm3d through mmdet3d's own converter functions.

What ``tools/create_data.py kitti`` does, with its traps handled (issue 12): the converters are imported
from mmdet3d's installed ``.mim/tools`` (no PYTHONPATH); the source root is never written (the output is
a separate root whose ``training/`` links to the source files); images are optional — they are read only
for their size, taken from the PNG header when ``image_2`` has the frame and otherwise assumed to be
KITTI's 375 x 1242 (recorded per frame in the manifest; it only sets the camera field of view that
``velodyne_reduced`` and the points-in-box counts are cropped to); a frame without ``velodyne/`` but with
``velodyne_reduced/`` uses that cloud; splits come from ``ImageSets/{train,val}.txt`` or ``val_every``;
no test split (mmdet3d's v2 update crashes on an empty one). Steps: v1 infos (get_kitti_image_info,
_calculate_num_points_in_gt), reduced clouds (_create_reduced_point_cloud), v2 infos (update_pkl_infos),
GT database (create_groundtruth_database). The result is written to a temporary sibling of ``out`` and
renamed into place; ``dm3d_prepare.json`` records the inputs, so preparing the same inputs again is a no-op.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError
from .common import converters, prepare, quiet

KITTI_IMAGE_SHAPE = (375, 1242)  # (height, width) of most KITTI object images (a few are 370-376 x 1224-1242)
VERSION = 1  # bump when the prepared layout changes


def _frames(folder: Path, suffix: str) -> set[str]:
    return {p.stem for p in folder.glob(f"*{suffix}")} if folder.is_dir() else set()


def _png_shape(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, None if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def read_layout(root: Path) -> dict:
    """Frames of a KITTI root (``training/`` with calib, label_2 and velodyne or velodyne_reduced), or a
    one-line InputError naming the missing folder or file."""
    training = root / "training"
    if not root.is_dir():
        raise InputError(f"KITTI root {str(root)!r} is not a directory, expected one holding training/")
    for sub in ("calib", "label_2"):
        if not (training / sub).is_dir():
            raise InputError(f"{training / sub} is missing: a KITTI root needs training/calib and training/label_2")
    full, reduced = _frames(training / "velodyne", ".bin"), _frames(training / "velodyne_reduced", ".bin")
    if not full and not reduced:
        raise InputError(f"{training / 'velodyne'} (or velodyne_reduced) has no .bin clouds, expected KITTI's "
                         "velodyne scans")
    labels, calibs = _frames(training / "label_2", ".txt"), _frames(training / "calib", ".txt")
    frames = sorted(labels)
    if not frames:
        raise InputError(f"{training / 'label_2'} has no .txt labels")
    for f in frames:
        if f not in calibs:
            raise InputError(f"{training / 'calib' / (f + '.txt')} is missing (the frame has a label)")
        if f not in full and f not in reduced:
            raise InputError(f"{training / 'velodyne' / (f + '.bin')} is missing (the frame has a label)")
    images = {f: _png_shape(training / "image_2" / f"{f}.png") for f in frames
              if (training / "image_2" / f"{f}.png").is_file()}
    return {"frames": frames, "full_cloud": sorted(set(frames) & full), "images": images}


def read_splits(root: Path, frames: list[str], val_every: int | None) -> dict[str, list[str]]:
    """train / val frame ids: ``val_every`` (every n-th frame to val) or the root's ImageSets files."""
    if val_every is not None:
        if val_every < 2:
            raise InputError(f"--val-every={val_every}: expected an integer >= 2 (every n-th frame to val)")
        splits = {"train": [f for i, f in enumerate(frames) if i % val_every],
                  "val": [f for i, f in enumerate(frames) if not i % val_every]}
    else:
        splits = {}
        for split in ("train", "val"):
            path = root / "ImageSets" / f"{split}.txt"
            if not path.is_file():
                raise InputError(f"{path} is missing: expected KITTI's split files (mmdet3d's data/kitti/ImageSets) "
                                 "or --val-every N")
            splits[split] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            missing = [f for f in splits[split] if f not in set(frames)]
            if missing:
                raise InputError(f"{path} lists frame {missing[0]!r} ({len(missing)} in all) that the root has no "
                                 "label/calib/cloud for")
    for split, ids in splits.items():
        if not ids:
            raise InputError(f"the {split} split is empty, expected at least one frame (use fewer frames per val "
                             "frame or other ImageSets)")
    return splits


def _fingerprint(root: Path, layout: dict, splits: dict) -> dict:
    """What the prepared output depends on: the frames, their files' sizes and mtimes, splits, version."""
    h = hashlib.sha256()
    for f in layout["frames"]:
        for sub, ext in (("label_2", ".txt"), ("calib", ".txt"), ("velodyne", ".bin"), ("velodyne_reduced", ".bin")):
            p = root / "training" / sub / f"{f}{ext}"
            if p.is_file():
                st = p.stat()
                h.update(f"{sub}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return {"version": VERSION, "root": str(root.resolve()), "files": h.hexdigest(), "splits": splits}


def _link_training(root: Path, stage: Path, layout: dict) -> None:
    src, dst = root.resolve() / "training", stage / "training"
    dst.mkdir(parents=True)
    for sub in ("calib", "label_2", "image_2"):
        if (src / sub).is_dir():
            os.symlink(src / sub, dst / sub)
    (dst / "velodyne").mkdir()
    for f in layout["frames"]:  # a frame with only a reduced cloud uses it as its scan
        sub = "velodyne" if f in layout["full_cloud"] else "velodyne_reduced"
        os.symlink(src / sub / f"{f}.bin", dst / "velodyne" / f"{f}.bin")
    (dst / "velodyne_reduced").mkdir()


def _v1_infos(kitti_converter, kitti_data_utils, stage: Path, ids: list[str], layout: dict) -> list[dict]:
    """mmdet3d v1 infos of ``ids`` (get_kitti_image_info without reading images, then the image size from
    the PNG header or the assumed KITTI size, then the points-in-box counts)."""
    real_get_image_path = kitti_data_utils.get_image_path
    kitti_data_utils.get_image_path = lambda idx, prefix, training=True, relative_path=True, **kw: \
        real_get_image_path(idx, prefix, training, relative_path, exist_check=False, **kw)
    try:
        infos = kitti_data_utils.get_kitti_image_info(str(stage), training=True, velodyne=True, calib=True,
                                                      image_ids=[int(i) for i in ids], relative_path=True,
                                                      with_imageshape=False, num_worker=1)
    finally:
        kitti_data_utils.get_image_path = real_get_image_path
    for info in infos:
        frame = f"{info['image']['image_idx']:06d}"
        shape = layout["images"].get(frame) or KITTI_IMAGE_SHAPE
        info["image"]["image_shape"] = np.array(shape, dtype=np.int32)
    kitti_converter._calculate_num_points_in_gt(str(stage), infos, relative_path=True)
    return infos


def _build(stage: Path, root: Path, layout: dict, splits: dict) -> dict:
    """Write the prepared dataset into ``stage``: linked training folders, ImageSets, infos v2,
    velodyne_reduced, GT database; returns the manifest's record of what was assumed."""
    kitti_converter, kitti_data_utils, update_infos_to_v2, create_gt_database = converters(
        "kitti_converter", "kitti_data_utils", "update_infos_to_v2", "create_gt_database")
    import mmengine

    _link_training(root, stage, layout)
    image_sets = stage / "ImageSets"
    image_sets.mkdir()
    for split, ids in splits.items():
        (image_sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    v1 = stage / ".v1"  # mmdet3d v1 infos, the converters' input; removed before publication
    v1.mkdir()
    with quiet():
        infos = {s: _v1_infos(kitti_converter, kitti_data_utils, stage, ids, layout) for s, ids in splits.items()}
        infos["trainval"] = infos["train"] + infos["val"]
        for split, data in infos.items():
            mmengine.dump(data, v1 / f"kitti_infos_{split}.pkl")
        for split in ("train", "val"):
            kitti_converter._create_reduced_point_cloud(str(stage), str(v1 / f"kitti_infos_{split}.pkl"),
                                                        save_path=str(stage / "training" / "velodyne_reduced"))
        for split in infos:
            update_infos_to_v2.update_pkl_infos("kitti", out_dir=str(stage), pkl_path=str(v1 / f"kitti_infos_{split}.pkl"))
        create_gt_database.create_groundtruth_database("KittiDataset", str(stage), "kitti",
                                                       "kitti_infos_train.pkl", relative_path=False)
    shutil.rmtree(v1)
    assumed = [f for f in layout["frames"] if f not in layout["images"]]
    return {"frames": len(layout["frames"]), "image_shape_assumed": assumed,
            "assumed_image_shape": list(KITTI_IMAGE_SHAPE),
            "reduced_cloud_as_scan": sorted(set(layout["frames"]) - set(layout["full_cloud"]))}


def prepare_kitti(root: str | os.PathLike, out: str | os.PathLike, val_every: int | None = None,
                  log=print) -> Path:
    """Prepare the KITTI root ``root`` into ``out`` (infos v2 for train/val/trainval, velodyne_reduced, GT
    database); returns ``out``. Idempotent: the same inputs again leave ``out`` as it is."""
    root, out = Path(root), Path(out)
    layout = read_layout(root)
    splits = read_splits(root, layout["frames"], val_every)
    fingerprint = _fingerprint(root, layout, splits)
    if not prepare(out, fingerprint, lambda stage: _build(stage, root, layout, splits), log,
                   f"{len(layout['frames'])} frames"):
        return out
    assumed = [f for f in layout["frames"] if f not in layout["images"]]
    log(f"prepared {out}: {len(splits['train'])} train / {len(splits['val'])} val frames"
        + (f"; image size assumed {KITTI_IMAGE_SHAPE[0]}x{KITTI_IMAGE_SHAPE[1]} for {len(assumed)} frames without "
           "image_2" if assumed else ""))
    return out
