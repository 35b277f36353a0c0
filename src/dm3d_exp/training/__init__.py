"""Reference detectors on the synthetic benchmark: detector specs, training recipe, evaluation helpers."""
from .detectors import DetectorSpec, available_detectors, load_detector_conf, repo_root, resolve_detector
from .recipe import TrainOptions, evaluate, load_config, train

__all__ = ["DetectorSpec", "TrainOptions", "available_detectors", "evaluate", "load_config",
           "load_detector_conf", "repo_root", "resolve_detector", "train"]
