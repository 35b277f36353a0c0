"""Content-addressed stage cache: ``<cache_dir>/<stage>/<key>/`` published by atomic rename.

key = sha256 of the canonical JSON of everything the stage's output depends on (its config section,
upstream keys, file hashes, the stage's code version). A file lock per key makes parallel jobs that
need the same artifact wait for the first one instead of computing it twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from .. import __version__


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(inputs: Any) -> str:
    """sha256 (first 20 hex) of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:20]


def file_sha256(path: str | os.PathLike, _memo: dict = {}) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime)."""
    st = os.stat(path)
    memo_key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _memo[memo_key] = h.hexdigest()
    return _memo[memo_key]


def code_version(*modules) -> str:
    """Hash of the source files of ``modules`` (and the package version): changes when their code does."""
    h = hashlib.sha256(__version__.encode())
    for module in modules:
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


@dataclass
class CacheEntry:
    stage: str
    key: str
    path: Path
    hit: bool
    seconds: float

    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())


class StageCache:
    """Directory of published stage outputs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(str(root))).resolve()

    def entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Path | None:
        d = self.entry_dir(stage, key)
        return d if (d / "meta.json").is_file() else None

    def get_or_compute(self, stage: str, inputs: dict, compute: Callable[[Path], dict | None]) -> CacheEntry:
        """Return the published entry for ``inputs``, computing it once under a lock if absent.

        ``compute(tmp_dir)`` writes the artifacts into ``tmp_dir`` and may return extra meta; the
        directory is then renamed into place with ``meta.json`` (inputs, versions, timing, host).
        """
        key = content_key(inputs)
        final = self.entry_dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if self.lookup(stage, key):
            return CacheEntry(stage, key, final, True, 0.0)
        with FileLock(str(final) + ".lock"):
            if self.lookup(stage, key):
                return CacheEntry(stage, key, final, True, 0.0)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
            start = time.perf_counter()
            try:
                extra = compute(tmp) or {}
                seconds = time.perf_counter() - start
                meta = {"stage": stage, "key": key, "inputs": inputs, "seconds": seconds,
                        "dm3d_exp_version": __version__, "host": socket.gethostname(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
                if final.exists():  # a stale, unpublished leftover without meta.json
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return CacheEntry(stage, key, final, False, seconds)
