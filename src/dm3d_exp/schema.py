"""Structured configs: types and ranges checked when a composed config is converted to objects.

Hydra composes YAML from ``conf/``; :func:`validate` turns the result into these dataclasses
(``OmegaConf.to_object`` runs ``__post_init__``), so a bad value fails with one line that names the key,
the value and what is expected, before any stage runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .core import methods as _methods
from .errors import InputError
from .kitti.format import EVAL_CLASSES

METHODS = _methods.METHODS.names()  # the registered pruning methods (core/methods.py)
STAGES = ("all", "calibrate", "sensitivity", "allocate", "prune", "recover", "evaluate")


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{key}={value!r} is not valid, expected one of: {', '.join(map(str, choices))}")


def _range(key: str, value, lo, hi, lo_open=False, hi_open=False) -> None:
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise InputError(f"{key}={value!r} is out of range, expected a value in {lb}{lo}, {hi}{rb}")


@dataclass
class DatasetConf:
    name: str = "synthetic_kitti"
    format: str = "kitti"
    root: Optional[str] = None
    classes: list = field(default_factory=lambda: list(EVAL_CLASSES))
    synth: Optional[dict] = field(default_factory=dict)

    def __post_init__(self):
        _choice("dataset.format", self.format, ("kitti", "nuscenes"))
        if self.root is None and self.synth is None:
            raise InputError(f"dataset.root is required for dataset {self.name!r} (e.g. dataset.root=/data/{self.name})")


@dataclass
class DetectorConf:
    name: str = "centerpoint_voxel_synth"
    mmdet3d_config: str = "conf/detector/mmdet3d/centerpoint_voxel_synth.py"
    checkpoint: Optional[str] = None
    trust_checkpoint: bool = False  # true: unpickle detector.checkpoint without restrictions (runs its code)

    @property
    def checkpoint_hint(self) -> str:
        """Where a missing checkpoint comes from: the mmdet3d model zoo for zoo configs, else our recipe."""
        if self.mmdet3d_config.startswith("mmdet3d::"):
            return (f"the mmdet3d model-zoo .pth of {self.mmdet3d_config.removeprefix('mmdet3d::')}, "
                    "as detector.checkpoint=PATH")
        return f"make train-reference DETECTOR={self.name}, or detector.checkpoint=PATH"


@dataclass
class PruningConf:
    method: str = "dm3d"
    flops_target: float = 0.25
    denominator: str = "whole"
    macs_mode: str = "tap_aware"
    allocator: str = _methods.OPTIONAL_SETTINGS["allocator"]  # the settings only some methods read: their
    budget_units: int = _methods.OPTIONAL_SETTINGS["budget_units"]  # defaults live with the method registry
    min_density: float = _methods.OPTIONAL_SETTINGS["min_density"]
    prunable: str = "all"

    def __post_init__(self):
        _choice("pruning.method", self.method, METHODS)
        method = _methods.get_method(self.method)
        _range("pruning.flops_target", self.flops_target, 0.0, 1.0, lo_open=True)
        _choice("pruning.denominator", self.denominator, ("whole", "prunable"))
        _choice("pruning.macs_mode", self.macs_mode, ("tap_aware", "density"))
        _choice("pruning.allocator", self.allocator, ("dp", "lagrangian"))
        _range("pruning.budget_units", self.budget_units, 10, 10_000_000)
        _range("pruning.min_density", self.min_density, 0.0, 1.0, hi_open=True)
        for key, default in _methods.OPTIONAL_SETTINGS.items():  # a setting the method ignores must stay default
            value = getattr(self, key)
            if key not in method.honours and key not in _methods.PRECISION_SETTINGS and value != default:
                readers = [n for n, m in _methods.METHODS.items() if key in m.honours]
                raise InputError(f"pruning.{key}={value!r} is not used by pruning.method={self.method!r}, "
                                 f"expected {default!r} (only {', '.join(readers)} read it)")


@dataclass
class CalibConf:
    split: str = "train"
    num_frames: int = 32
    reference_frames: int = 8
    seed: int = 0

    def __post_init__(self):
        _choice("calib.split", self.split, ("train", "val"))
        _range("calib.num_frames", self.num_frames, 1, 100_000)
        _range("calib.reference_frames", self.reference_frames, 1, 100_000)


@dataclass
class SensitivityConf:
    method: str = "fisher"
    probe: str = "random"
    probes_per_frame: int = 1
    num_levels: int = 1000
    measured_levels: int = 20
    ranking: str = "magnitude"
    form: str = "gauss_newton"
    damping: float = 1e-7
    damping_mode: str = "absolute"
    lambda_loc: float = 1.0
    lambda_conf: float = 1.0
    foreground_weighting: bool = False
    normalize: str = "none"
    perturbation: str = "auto"         # auto (reconstructed iff recovery=reconstruct) | zeroed (the paper) | reconstructed
    coarse_levels: int = 20            # K_c: reconstructed levels per layer (perturbation=reconstructed)

    def __post_init__(self):
        _choice("sensitivity.method", self.method, ("fisher", "measured"))
        _choice("sensitivity.perturbation", self.perturbation, ("auto", "zeroed", "reconstructed"))
        _range("sensitivity.coarse_levels", self.coarse_levels, 1, 10_000)
        _choice("sensitivity.probe", self.probe, ("random", "mean_square"))
        _range("sensitivity.probes_per_frame", self.probes_per_frame, 1, 10_000)
        _range("sensitivity.num_levels", self.num_levels, 1, 100_000)
        _range("sensitivity.measured_levels", self.measured_levels, 1, 100_000)
        _choice("sensitivity.ranking", self.ranking, ("magnitude", "taylor"))
        _choice("sensitivity.form", self.form, ("gauss_newton", "squared"))
        _range("sensitivity.damping", self.damping, 0.0, float("inf"))
        _choice("sensitivity.damping_mode", self.damping_mode, ("absolute", "relative"))
        _choice("sensitivity.normalize", self.normalize, ("none", "channel_variance"))
        _range("sensitivity.lambda_loc", self.lambda_loc, 0.0, float("inf"))
        _range("sensitivity.lambda_conf", self.lambda_conf, 0.0, float("inf"))
        if self.lambda_loc == 0 and self.lambda_conf == 0:
            raise InputError("sensitivity.lambda_loc and sensitivity.lambda_conf are both 0, expected at least one > 0")


@dataclass
class RecoveryConf:
    """Finetune-free recovery after pruning (METHOD.md §11; beyond the paper)."""

    method: str = "none"               # none | reconstruct
    target: str = "dense_weights"      # dense_weights | dense_outputs
    damping: float = 1e-4              # alpha: damp = alpha * mean(diag H)
    num_frames: Optional[int] = 8      # calibration frames used (null: all of calib.num_frames)
    max_sites: int = 4096              # output sites per layer and frame (seeded subsample)
    layers_per_pass: int = 1           # 1: fully sequential; large: parallel (inputs from the dense model)
    statistics: str = "none"           # none | bn_reestimate | statcorr
    bn_frames: int = 64                # training-pipeline frames for BN re-estimation
    bn_batch_size: Optional[int] = None  # null: the detector's training batch size

    def __post_init__(self):
        _choice("recovery.method", self.method, ("none", "reconstruct"))
        _choice("recovery.target", self.target, ("dense_weights", "dense_outputs"))
        _range("recovery.damping", self.damping, 0.0, float("inf"), lo_open=True)
        if self.num_frames is not None:
            _range("recovery.num_frames", self.num_frames, 1, 100_000)
        _range("recovery.max_sites", self.max_sites, 1, 100_000_000)
        _range("recovery.layers_per_pass", self.layers_per_pass, 1, 100_000)
        _choice("recovery.statistics", self.statistics, ("none", "bn_reestimate", "statcorr"))
        _range("recovery.bn_frames", self.bn_frames, 1, 100_000)
        if self.bn_batch_size is not None:
            _range("recovery.bn_batch_size", self.bn_batch_size, 1, 1024)

    @property
    def enabled(self) -> bool:
        return self.method != "none" or self.statistics != "none"


@dataclass
class EvalConf:
    split: str = "val"
    num_frames: Optional[int] = None
    distortion_frames: int = 8
    additivity_checks: int = 0
    batch_size: int = 1
    bootstrap: int = 200               # frame resamples for the 95 % interval of mAP (0: off; KITTI format)
    max_detections: Optional[int] = 500  # per-frame cap on scored detections (top by score); null: none

    def __post_init__(self):
        _choice("eval.split", self.split, ("train", "val"))
        if self.max_detections is not None:
            _range("eval.max_detections", self.max_detections, 1, 1_000_000)
        _range("eval.bootstrap", self.bootstrap, 0, 100_000)
        if self.num_frames is not None:
            _range("eval.num_frames", self.num_frames, 1, 10_000_000)
        _range("eval.distortion_frames", self.distortion_frames, 0, 100_000)
        _range("eval.additivity_checks", self.additivity_checks, 0, 1000)
        if self.additivity_checks and not self.distortion_frames:
            raise InputError("eval.additivity_checks needs eval.distortion_frames > 0 (the frames it measures D on)")
        _range("eval.batch_size", self.batch_size, 1, 1024)


@dataclass
class TrackingConf:
    backend: str = "sqlite"
    uri: Optional[str] = None
    db_path: Optional[str] = None

    def __post_init__(self):
        _choice("tracking.backend", self.backend, ("sqlite", "server", "off"))
        if self.backend == "server" and not self.uri:
            raise InputError("tracking.uri is required with tracking=server (e.g. http://127.0.0.1:5000)")


@dataclass
class RunConf:
    dataset: DatasetConf = field(default_factory=DatasetConf)
    detector: DetectorConf = field(default_factory=DetectorConf)
    pruning: PruningConf = field(default_factory=PruningConf)
    calib: CalibConf = field(default_factory=CalibConf)
    sensitivity: SensitivityConf = field(default_factory=SensitivityConf)
    recovery: RecoveryConf = field(default_factory=RecoveryConf)
    eval: EvalConf = field(default_factory=EvalConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    stage: str = "all"
    seed: int = 0
    device: str = "auto"
    threads: int = 1                   # torch CPU threads of every stage (part of every cache key, see README)
    cache_dir: str = "~/.cache/dm3d-exp/stages"
    progress: bool = True
    study: str = "default"

    def __post_init__(self):
        _choice("stage", self.stage, STAGES)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _range("threads", self.threads, 1, 1024)
        if (self.recovery.method == "reconstruct" and self.recovery.num_frames is not None
                and self.recovery.num_frames > self.calib.num_frames):
            raise InputError(f"recovery.num_frames={self.recovery.num_frames} is larger than calib.num_frames="
                             f"{self.calib.num_frames}, expected at most the calibration frames")
        measured = self.sensitivity.method == "measured" or _methods.get_method(self.pruning.method).curves == "measured"
        if self.sensitivity.perturbation == "reconstructed" and measured:
            raise InputError("sensitivity.perturbation='reconstructed' with measured curves, expected "
                             "sensitivity.method=fisher (reconstruction-aware curves are Fisher curves)")
        if self.sensitivity.perturbation == "reconstructed" and self.recovery.method != "reconstruct":
            raise InputError(f"sensitivity.perturbation='reconstructed' with recovery.method={self.recovery.method!r}, "
                             f"expected recovery=reconstruct (the curves model the reconstruction it applies)")
        if self.detector.checkpoint is None:
            raise InputError(f"detector.checkpoint is missing for detector {self.detector.name!r}, expected a "
                             f"trained .pth ({self.detector.checkpoint_hint})")


def validate(cfg: DictConfig) -> RunConf:
    """Typed, range-checked view of a composed run config (raises InputError with one line)."""
    plain = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra" and k in RunConf.__dataclass_fields__}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConf), plain)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise InputError(f"config error at {key}: {msg}" if key else f"config error: {msg}") from None
    return obj
