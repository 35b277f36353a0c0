"""Content-addressed stage cache: keys, hits, atomic publish, one computation under concurrency."""
import multiprocessing as mp
import time

import pytest

from dm3d_exp.pipeline.cache import StageCache, content_key


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
