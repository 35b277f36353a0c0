"""Shared fixtures of the synthetic-dataset tests: generated datasets and the optional reference data."""
from __future__ import annotations

from pathlib import Path

import pytest

from dm3d_exp.data import SynthParams, ensure_dataset

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (reference KITTI data); tests using it skip on machines without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data {SHARED_DATA} not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_params() -> SynthParams:
    return SynthParams(num_train=6, num_val=3, seed=11)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_params) -> Path:
    """9 frames, generated with 2 worker processes."""
    return ensure_dataset(small_params, root=tmp_path_factory.mktemp("small") / "ds", workers=2)


@pytest.fixture(scope="session")
def medium_dataset(tmp_path_factory) -> Path:
    """160 frames with the default generator settings: enough for statistics and the realism bound."""
    params = SynthParams(num_train=128, num_val=32, seed=0)
    return ensure_dataset(params, root=tmp_path_factory.mktemp("medium") / "ds", workers=2)
