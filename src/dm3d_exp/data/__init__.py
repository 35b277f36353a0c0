"""Synthetic KITTI-like LiDAR benchmark: the embedded default dataset.

``ensure_dataset(SynthParams(...)) -> Path`` generates (once, cached) a KITTI-layout dataset of
procedural street scenes scanned by a simulated HDL-64E, with mmdet3d 1.4 info files and a GT database;
``realism_report`` compares its point densities with real KITTI frames. CLI: ``dm3d_exp.data.cli:main``.
"""
from .cache import check_dataset, dataset_dir, default_cache_root, ensure_dataset, read_manifest
from .frame import Frame, generate_frame
from .params import GENERATOR_VERSION, SynthParams
from .realism import realism_report
from .writer import build_info, generate_dataset

__all__ = ["GENERATOR_VERSION", "Frame", "SynthParams", "build_info", "check_dataset", "dataset_dir",
           "default_cache_root", "ensure_dataset", "generate_dataset", "generate_frame", "read_manifest",
           "realism_report"]
