"""Content-addressed stage cache: ``<cache_dir>/<stage>/<key>/`` published by atomic rename.

key = sha256 of the canonical JSON of everything the stage's output depends on (its config section,
upstream keys, file hashes, the stage's code version). A file lock per key makes parallel jobs that
need the same artifact wait for the first one instead of computing it twice. A computation writes into
``<stage>/.<key>.<pid>@<host>.<random>/``; the leftovers of owners that died (kill -9) are removed on the
next access of that stage directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from .. import __version__


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(inputs: Any) -> str:
    """sha256 (first 20 hex) of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:20]


# temp dir of a computation: .<key>.<pid>@<host>.<mkdtemp suffix>; without pid@host: written before owners were named
_TEMP_DIR = re.compile(r"^\.(?P<key>[0-9a-f]+)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[a-z0-9_]+$")
FOREIGN_TEMP_AGE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _lock_free(lock_path: Path) -> bool:
    """Whether nobody holds the key's lock (its computation, which owns any temp dir of the key, is not running)."""
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return True


def remove_stale_temp_dirs(stage_dir: str | os.PathLike, foreign_age_s: float = FOREIGN_TEMP_AGE_S) -> list[Path]:
    """Remove the unpublished temp dirs in ``stage_dir`` whose owner is dead; return them.

    A dir named by a process of this host is stale when that pid no longer runs (a reused pid keeps it).
    Another host's dir, or an unnamed one from an older version, cannot be checked by pid: it is removed only
    when its key's lock is free and it was untouched for ``foreign_age_s``. A live owner's dir is never removed.
    """
    host, removed = _host(), []
    try:
        entries = list(os.scandir(stage_dir))
    except FileNotFoundError:
        return removed
    for e in entries:
        m = _TEMP_DIR.match(e.name)
        if not m or not e.is_dir(follow_symlinks=False):
            continue
        if m["pid"] and m["host"] == host:
            stale = not _pid_alive(int(m["pid"]))
        else:
            stale = (time.time() - e.stat(follow_symlinks=False).st_mtime > foreign_age_s
                     and _lock_free(Path(stage_dir) / f"{m['key']}.lock"))
        if stale:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(Path(e.path))
    return removed


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
        if self.lookup(stage, key):
            return CacheEntry(stage, key, final, True, 0.0)
        with FileLock(str(final) + ".lock"):
            if self.lookup(stage, key):
                return CacheEntry(stage, key, final, True, 0.0)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}@{_host()}.", dir=final.parent))
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
