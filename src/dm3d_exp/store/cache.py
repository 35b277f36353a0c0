"""Content-addressed stage cache: ``<cache_dir>/<stage>/<key>/`` published by atomic rename.

key = sha256 of the canonical JSON of everything the stage's output depends on (its config section,
upstream keys, file hashes, the stage's code version). Published by :func:`dm3d_exp.publish.publish_dir`:
a file lock per key (``<key>.lock``) makes parallel jobs that need the same artifact wait for the first
one instead of computing it twice; a computation writes into ``<stage>/.<key>.<pid>@<host>.<random>/``;
the leftovers of owners that died (kill -9) are removed on the next access of that stage directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__, publish
from ..publish import FOREIGN_TEMP_AGE_S


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(inputs: Any) -> str:
    """sha256 (first 20 hex) of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:20]


def remove_stale_temp_dirs(stage_dir: str | os.PathLike, foreign_age_s: float = FOREIGN_TEMP_AGE_S) -> list[Path]:
    """Remove the unpublished temp dirs of every key in ``stage_dir`` whose owner is dead (the rules of
    :func:`dm3d_exp.publish.remove_stale_temp_dirs`; a key's lock is ``<key>.lock``); return them."""
    return publish.remove_stale_temp_dirs(stage_dir, publish.HEX_KEY, _lock_name, foreign_age_s)


def _lock_name(key: str) -> str:
    return f"{key}.lock"


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
        remove_stale_temp_dirs(final.parent)

        def build(tmp: Path) -> float:
            start = time.perf_counter()
            extra = compute(tmp) or {}
            seconds = time.perf_counter() - start
            meta = {"stage": stage, "key": key, "inputs": inputs, "seconds": seconds,
                    "dm3d_exp_version": __version__, "host": socket.gethostname(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            return seconds

        hit, seconds = publish.publish_dir(final, build, lambda d: (d / "meta.json").is_file(),
                                           lock=final.parent / _lock_name(key))
        return CacheEntry(stage, key, final, hit, seconds or 0.0)
