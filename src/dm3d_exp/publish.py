"""Publish a directory once, atomically: the one publisher of the stage cache, the synthetic-dataset cache
and ``dm3d-prepare`` outputs.

A directory is built under an exclusive file lock in a temp sibling ``.<name>.<pid>@<host>.<random>``
and renamed into place, so it is either complete or absent; parallel processes that need the same
directory wait for the first one instead of building it twice. Temp dirs whose owner died (kill -9) are
removed on the next publication beside them (:func:`remove_stale_temp_dirs`).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

T = TypeVar("T")
FOREIGN_TEMP_AGE_S = 24 * 3600
HEX_KEY = r"[0-9a-f]+"  # the stage cache's keys


def host_name() -> str:
    """This host's name as it appears in temp-dir names (characters other than [A-Za-z0-9-] replaced)."""
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
    """Whether nobody holds the lock (the build that owns any temp dir of that name is not running)."""
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    lock.release()
    return True


def remove_stale_temp_dirs(parent: str | os.PathLike, name: str = HEX_KEY, lock_name: Callable[[str], str] | None = None,
                           foreign_age_s: float = FOREIGN_TEMP_AGE_S) -> list[Path]:
    """Remove the unpublished temp dirs in ``parent`` of the targets matching the regex ``name`` whose owner is
    dead; return them. ``lock_name(target)`` is the target's lock file name (default ``.<target>.lock``).

    A dir named by a process of this host is stale when that pid no longer runs (a reused pid keeps it).
    Another host's dir, or an unnamed one (``.<target>.<random>``, older versions), cannot be checked by pid:
    it is removed only when its target's lock is free and it was untouched for ``foreign_age_s``. A live
    owner's dir is never removed.
    """
    pattern = re.compile(rf"^\.(?P<key>{name})\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[a-z0-9_]+$")
    lock_name = lock_name or (lambda target: f".{target}.lock")
    host, removed = host_name(), []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return removed
    for e in entries:
        m = pattern.match(e.name)
        if not m or not e.is_dir(follow_symlinks=False):
            continue
        if m["pid"] and m["host"] == host:
            stale = not _pid_alive(int(m["pid"]))
        else:
            stale = (time.time() - e.stat(follow_symlinks=False).st_mtime > foreign_age_s
                     and _lock_free(Path(parent) / lock_name(m["key"])))
        if stale:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(Path(e.path))
    return removed


def publish_dir(final: str | os.PathLike, build: Callable[[Path], T], ready: Callable[[Path], bool],
                lock: str | os.PathLike | None = None, replace: bool = False) -> tuple[bool, T | None]:
    """Make ``final`` a directory that ``ready`` accepts, building it with ``build(tmp_dir)`` only if needed.

    Returns (True, None) when ``final`` was ready (before or after waiting for the lock ``lock``, default
    ``.<name>.lock`` beside it), else (False, what ``build`` returned) after publishing. Whatever stands at
    ``final`` and is not ready is removed before the rename (an empty dir, a leftover without its marker
    file) — or, with ``replace``, swapped out atomically (old renamed aside, new renamed in, old removed) so
    readers never see neither. A failed build leaves nothing behind.
    """
    final = Path(final)
    if ready(final):
        return True, None
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(lock) if lock is not None else final.parent / f".{final.name}.lock"
    with FileLock(str(lock)):
        if ready(final):  # another process published it while we waited
            return True, None
        remove_stale_temp_dirs(final.parent, re.escape(final.name), lambda _: lock.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}@{host_name()}.", dir=final.parent))
        try:
            result = build(tmp)
            os.chmod(tmp, 0o755)
            if final.exists() and replace:
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}@{host_name()}.", dir=final.parent))
                os.replace(final, old / final.name)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return False, result
