"""Fixtures shared by every test directory."""
from __future__ import annotations

import contextlib

import pytest
import torch


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block on ``n`` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def torch_threads():
    """``with torch_threads(n): ...`` — a thread count for one block (e.g. the count a checkpoint was scored with)."""
    return _torch_threads


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module: spconv's multi-threaded CPU sums change order between calls
    (deep sparse stacks then exceed 1e-3 repeat-call tolerances), and tiny ops only add contention."""
    with _torch_threads(1):
        yield
