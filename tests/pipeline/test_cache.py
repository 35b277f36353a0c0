"""Content-addressed stage cache: keys, hits, atomic publish, one computation under concurrency."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from dm3d_exp.store.cache import FOREIGN_TEMP_AGE_S, StageCache, content_key, remove_stale_temp_dirs


def test_key_depends_on_every_input_and_not_on_dict_order():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    assert content_key(a) == content_key({"y": {"a": [1, 2], "b": 2}, "x": 1})
    assert content_key(a) != content_key({"x": 1, "y": {"b": 3, "a": [1, 2]}})
    assert content_key(a) != content_key({"x": 1, "y": {"b": 2, "a": [2, 1]}})


def test_miss_then_hit_and_meta(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def compute(out):
        calls.append(out)
        (out / "a.txt").write_text("hello")
        return {"extra": 7}

    first = cache.get_or_compute("stage", {"k": 1}, compute)
    second = cache.get_or_compute("stage", {"k": 1}, compute)
    assert not first.hit and second.hit and len(calls) == 1
    assert (second.path / "a.txt").read_text() == "hello"
    meta = second.meta()
    assert meta["inputs"] == {"k": 1} and meta["extra"] == 7 and meta["key"] == first.key
    third = cache.get_or_compute("stage", {"k": 2}, compute)
    assert not third.hit and third.path != first.path


def test_failed_compute_publishes_nothing(tmp_path):
    cache = StageCache(tmp_path)

    def boom(out):
        (out / "partial.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("stage", {"k": 1}, boom)
    assert cache.lookup("stage", content_key({"k": 1})) is None
    assert [p.name for p in (tmp_path / "stage").iterdir() if not p.name.endswith(".lock")] == []


def _worker(root, counter, start):
    while time.time() < start:
        time.sleep(0.001)

    def compute(out):
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.5)
        (out / "r").write_text("done")

    StageCache(root).get_or_compute("shared", {"same": True}, compute)


def test_parallel_jobs_compute_a_shared_entry_once(tmp_path):
    counter = tmp_path / "count"
    start = time.time() + 0.5
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(tmp_path / "c", counter, start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert counter.read_text() == "x"


# A job that starts computing an entry, reports its temp dir and then waits (for a "go" file, or forever).
_OWNER = """
import sys, time
from pathlib import Path
from dm3d_exp.store.cache import StageCache
root, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
def compute(out):
    (out / "partial.bin").write_bytes(b"x" * 1000)
    ready.write_text(str(out))
    while not go.exists():
        time.sleep(0.02)
    (out / "r").write_text("done")
StageCache(root).get_or_compute("stage", {"k": "owner"}, compute)
"""


def _start_owner(tmp_path):
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path / "c"), str(ready), str(go)])
    deadline = time.time() + 60
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ready.exists(), f"owner did not start computing (exit code {proc.poll()})"
    return proc, Path(ready.read_text()), go


def _writes(text):
    def compute(out):
        (out / "r").write_text(text)
    return compute


def _leftovers(stage_dir):
    return sorted(p.name for p in stage_dir.iterdir() if p.name.startswith("."))


def test_temp_dir_of_a_killed_owner_is_removed_on_next_access(tmp_path):
    proc, tmp, _ = _start_owner(tmp_path)
    assert tmp.name.startswith(f".{content_key({'k': 'owner'})}.{proc.pid}@")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert (tmp / "partial.bin").is_file()  # kill -9 leaves the partial entry behind
    cache = StageCache(tmp_path / "c")
    cache.get_or_compute("stage", {"k": "other"}, _writes("other"))
    assert not tmp.exists() and _leftovers(tmp.parent) == []
    again = cache.get_or_compute("stage", {"k": "owner"}, _writes("recomputed"))
    assert not again.hit and (again.path / "r").read_text() == "recomputed"


def test_temp_dir_of_a_live_owner_is_kept(tmp_path):
    proc, tmp, go = _start_owner(tmp_path)
    try:
        cache = StageCache(tmp_path / "c")
        cache.get_or_compute("stage", {"k": "other"}, _writes("other"))
        assert (tmp / "partial.bin").is_file() and _leftovers(tmp.parent) == [tmp.name]
        go.write_text("")
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    entry = cache.get_or_compute("stage", {"k": "owner"}, lambda out: pytest.fail("recomputed a published entry"))
    assert entry.hit and (entry.path / "r").read_text() == "done" and _leftovers(tmp.parent) == []


def test_unnamed_and_foreign_temp_dirs_are_removed_only_when_old_and_unlocked(tmp_path):
    stage = tmp_path / "stage"
    key = content_key({"k": 1})
    legacy, foreign = stage / f".{key}.k2j_3xab", stage / f".{key}.4242@another-host.ab12cd34"
    for d in (legacy, foreign):
        d.mkdir(parents=True)
    assert remove_stale_temp_dirs(stage) == [] and legacy.is_dir() and foreign.is_dir()  # young: kept
    old = time.time() - FOREIGN_TEMP_AGE_S - 60
    for d in (legacy, foreign):
        os.utime(d, (old, old))
    with FileLock(str(stage / f"{key}.lock")):  # its key is being computed: kept
        assert remove_stale_temp_dirs(stage) == []
    assert sorted(remove_stale_temp_dirs(stage)) == sorted([legacy, foreign])
    assert not legacy.exists() and not foreign.exists()
