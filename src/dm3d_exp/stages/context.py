"""What every stage needs: resolved paths, identities for cache keys, the model and the datasets."""
from __future__ import annotations

import functools
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..adapters.checkpoint import weights_sha256
from ..adapters.data import build_dataset, info_path
from ..adapters.detector import build_detector, load_config
from ..adapters.layers import prunable_modules
from ..errors import InputError
from ..fileio import file_sha256
from ..store.cache import StageCache
from ..schema import RunConf

# The source tree (conf/, checkpoints/, the mmdet3d configs): this package's clone, or $DM3D_REPO (a clone,
# for a non-editable install whose package lives elsewhere).
REPO_ROOT = Path(os.environ.get("DM3D_REPO") or Path(__file__).resolve().parents[3])

# `pruning.prunable` shortcuts -> module-name prefixes (mmdet3d single-stage and MVX two-stage names)
PRUNABLE_GROUPS = {
    "backbone3d": ("voxel_encoder", "pts_voxel_encoder", "middle_encoder", "pts_middle_encoder", "points_encoder"),
    "backbone2d": ("backbone", "pts_backbone", "neck", "pts_neck"),
    "heads": ("bbox_head", "pts_bbox_head", "rpn_head", "roi_head"),
}


def repo_path(path: str) -> str:
    """Absolute path for config values given relative to the repository root."""
    if path.startswith("mmdet3d::") or os.path.isabs(path):
        return path
    return str(REPO_ROOT / path)


def select_prunable(names, spec: str) -> list[str]:
    """Layer names matching ``pruning.prunable`` (``all``, a group name, or comma-separated prefixes)."""
    if spec == "all":
        return list(names)
    prefixes: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        prefixes.extend(PRUNABLE_GROUPS.get(part, (part,)))
    chosen = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
    if not chosen:
        raise InputError(f"pruning.prunable={spec!r} selects no layer, expected 'all', one of "
                         f"{', '.join(PRUNABLE_GROUPS)} or module-name prefixes")
    return chosen


def seeded_indices(n_total: int, n: int | None, seed: int, key: str = "frames") -> list[int]:
    """The first ``n`` of a seeded permutation of range(n_total) (all, in order, when n is None); ``key``
    names the config key of ``n`` in the error for more frames than the split has."""
    if n is None:
        return list(range(n_total))
    if n > n_total:
        raise InputError(f"{key}={n} is larger than the split ({n_total} frames), expected at most {n_total}")
    return sorted(np.random.default_rng(seed).permutation(n_total)[:n].tolist())


class RunContext:
    """Lazily resolved dataset root, detector config/model and datasets of one run."""

    def __init__(self, conf: RunConf):
        self.conf = conf
        self.cache = StageCache(conf.cache_dir)
        want = conf.device
        self.device = "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
        torch.set_num_threads(conf.threads)

    @property
    def numerics_identity(self) -> dict:
        """What changes floating-point results besides the inputs: the device and the CPU thread count
        (MKL/oneDNN split reductions by thread; spconv's CPU path is race-free, :mod:`..adapters.spconv_cpu`).
        Part of the calibrate key, hence of every key downstream."""
        return {"device": self.device, "threads": self.conf.threads}

    @functools.cached_property
    def data_root(self) -> Path:
        ds = self.conf.dataset
        if ds.root:
            root = Path(os.path.expanduser(ds.root))
            if not root.is_dir():
                raise InputError(f"dataset.root={ds.root!r} is not a directory, expected a prepared {ds.name} root")
            return root
        from ..data.cache import ensure_dataset
        from ..data.params import SynthParams

        return Path(ensure_dataset(SynthParams.from_dict(dict(ds.synth or {}))))

    @functools.cached_property
    def dataset_identity(self) -> dict:
        ds = self.conf.dataset
        ident = {"name": ds.name, "format": ds.format}
        if not ds.root:
            from ..data.params import GENERATOR_VERSION

            ident.update(generator=GENERATOR_VERSION, synth=dict(ds.synth or {}))
        else:
            ident["infos"] = {s: file_sha256(info_path(self.data_root, ds.format, s)) for s in ("train", "val")
                              if os.path.isfile(os.path.join(self.data_root, f"{ds.format}_infos_{s}.pkl"))}
        return ident

    @functools.cached_property
    def mmdet3d_cfg(self):
        return load_config(repo_path(self.conf.detector.mmdet3d_config))

    @property
    def checkpoint(self) -> str | None:
        ck = self.conf.detector.checkpoint
        return repo_path(ck) if ck else None

    @functools.cached_property
    def detector_identity(self) -> dict:
        cfg_path = repo_path(self.conf.detector.mmdet3d_config)
        ident = {"name": self.conf.detector.name, "config": self.mmdet3d_cfg.pretty_text}
        if not cfg_path.startswith("mmdet3d::"):
            ident["config_sha256"] = file_sha256(cfg_path)
        if self.checkpoint:
            if not os.path.isfile(self.checkpoint):
                raise InputError(f"detector.checkpoint={self.conf.detector.checkpoint!r} does not exist, expected a "
                                 f"trained .pth ({self.conf.detector.checkpoint_hint})")
            ident["checkpoint_sha256"] = file_sha256(self.checkpoint)
        return ident

    def _trusted(self, checkpoint: str | None) -> bool:
        """``detector.trust_checkpoint`` applies to the run's own checkpoint only, never to cache entries."""
        return bool(self.conf.detector.trust_checkpoint) and checkpoint == self.checkpoint

    def model(self, checkpoint: str | None = "default"):
        """A fresh detector on the run's device with the given (default: the run's) checkpoint."""
        ck = self.checkpoint if checkpoint == "default" else checkpoint
        return build_detector(self.mmdet3d_cfg, ck, device=self.device, trust=self._trusted(ck))

    def weights_identity(self, checkpoint: str | None) -> str | None:
        """Content hash of ``checkpoint``'s weights (None: randomly initialised), read as :meth:`model` reads it."""
        return weights_sha256(checkpoint, trust=self._trusted(checkpoint)) if checkpoint else None

    @functools.lru_cache(maxsize=None)
    def dataset(self, split: str):
        return build_dataset(self.mmdet3d_cfg, self.data_root, self.conf.dataset.format, split)

    def prunable_layers(self, model) -> dict:
        layers = dict(prunable_modules(model))
        return {n: layers[n] for n in select_prunable(layers, self.conf.pruning.prunable)}

    def section(self, name: str) -> dict:
        return asdict(getattr(self.conf, name))
