"""Parameters of the synthetic KITTI-like dataset (validated; hashed into the cache directory name)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from ..errors import InputError

# Bump when the generator's output changes for the same parameters (invalidates cached datasets).
GENERATOR_VERSION = "2"

# name -> (kind, low, high, meaning); all bounds inclusive.
_RANGES: dict[str, tuple[type, float, float, str]] = {
    "num_train": (int, 1, 100_000, "training frames"),
    "num_val": (int, 0, 100_000, "validation frames"),
    "seed": (int, 0, 2**63 - 1, "random seed"),
    "azimuth_step_deg": (float, 0.05, 1.0, "azimuth step between LiDAR firings, degrees"),
    "azimuth_half_window_deg": (float, 42.5, 180.0,
                                "half width of the scanned azimuth window around the camera axis, degrees "
                                "(>= 42.5 covers the camera field of view)"),
    "range_noise_m": (float, 0.0, 0.2, "range noise standard deviation, metres"),
    "dropout": (float, 0.0, 0.9, "probability that a return is randomly lost"),
    "intensity_noise": (float, 0.0, 0.3, "reflectance noise standard deviation"),
    "max_range_m": (float, 20.0, 200.0, "maximum LiDAR range, metres"),
    "object_density": (float, 0.0, 4.0, "multiplier on the KITTI-fitted number of objects per frame"),
}


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines the generated dataset's bytes.

    Defaults model the KITTI HDL-64E: the azimuth step 0.18 deg is measured on the real KITTI scans in
    ``../shared/data/kitti_real_frames`` (about 2000 returns per ring per revolution). Only the azimuth
    window ``+-azimuth_half_window_deg`` around the forward axis is scanned (the default 45 deg covers the
    camera's field of view, -40.5..+42.1 deg), so ``training/velodyne`` holds that window, not 360 deg.
    """

    num_train: int = 800
    num_val: int = 200
    seed: int = 0
    azimuth_step_deg: float = 0.1667
    azimuth_half_window_deg: float = 45.0
    range_noise_m: float = 0.02
    dropout: float = 0.02
    intensity_noise: float = 0.03
    max_range_m: float = 120.0
    object_density: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            kind, lo, hi, meaning = _RANGES[f.name]
            v = getattr(self, f.name)
            ok_type = isinstance(v, int) and not isinstance(v, bool) if kind is int else (
                isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok_type or not (lo <= v <= hi):  # NaN fails the range test
                what = "an integer" if kind is int else "a number"
                raise InputError(f"{f.name}={v!r} is invalid, expected {what} in [{lo}, {hi}] ({meaning})")
            if kind is float:
                object.__setattr__(self, f.name, float(v))

    @property
    def num_frames(self) -> int:
        return self.num_train + self.num_val

    def to_dict(self) -> dict:
        """Plain dict of all parameters (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthParams":
        """Inverse of ``to_dict``; unknown keys raise InputError."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown synthetic dataset parameter(s) {', '.join(unknown)}, expected "
                             f"{', '.join(f.name for f in fields(cls))}")
        return cls(**d)

    def digest(self) -> str:
        """12-hex-digit hash of the generator version and all parameters (names the cache directory)."""
        blob = json.dumps({"generator_version": GENERATOR_VERSION, "params": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
