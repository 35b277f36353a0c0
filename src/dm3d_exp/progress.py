"""Progress bars for long work (tqdm), switchable off for logs and tests."""
from __future__ import annotations

import contextlib
import sys

from tqdm import tqdm


class _Bar:
    def __init__(self, bar):
        self._bar = bar

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (or a silent stand-in when disabled) exposing ``advance(n)``."""
    if not enabled:
        yield _Bar(None)
        return
    with tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        yield _Bar(bar)
