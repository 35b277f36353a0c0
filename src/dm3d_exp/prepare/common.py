"""What every ``dm3d-prepare`` dataset shares: mmdet3d's converter modules (shipped inside its wheel under
``.mim/tools``), quiet converter notices, and one idempotent, atomic publication of the prepared root."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..publish import publish_dir

MANIFEST = "dm3d_prepare.json"


def converters(*names: str) -> list:
    """mmdet3d's ``tools.dataset_converters.<name>`` modules (no PYTHONPATH: its tools live in .mim)."""
    import mmdet3d

    mim = str(Path(mmdet3d.__file__).parent / ".mim")
    if mim not in sys.path:
        sys.path.insert(0, mim)
    return [importlib.import_module(f"tools.dataset_converters.{n}") for n in names]


@contextlib.contextmanager
def quiet():
    """Drop the converters' print() notices (file names, warnings meant for their own CLI); their mmengine
    progress bars write to the terminal's stdout directly and stay visible."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def prepare(out: Path, fingerprint: dict, build: Callable[[Path], dict], log, what: str) -> bool:
    """Publish the prepared root ``out`` (``build(stage)`` writes it and returns the manifest's extra
    fields) unless ``out`` already holds one of the same ``fingerprint``; True when it was built now.
    A foreign ``out`` is refused; an earlier preparation of other inputs is replaced atomically."""
    if out.exists() and not (out / MANIFEST).is_file():
        raise InputError(f"{out} exists and is not a dm3d-prepare output, expected a new or earlier-prepared path")

    def up_to_date(d: Path) -> bool:
        if not (d / MANIFEST).is_file():
            return False
        old = json.loads((d / MANIFEST).read_text())
        return {k: old.get(k) for k in fingerprint} == fingerprint

    if not up_to_date(out):
        from ..adapters.runtime import setup_mmdet3d

        setup_mmdet3d()  # mmdet3d's registries (the GT database builds the dataset class)

        def build_with_manifest(stage: Path) -> None:
            record = {**fingerprint, **build(stage)}
            (stage / MANIFEST).write_text(json.dumps(record, indent=1))

        already, _ = publish_dir(out, build_with_manifest, up_to_date, replace=True)
        if not already:
            return True
    log(f"{out} is up to date ({what})")
    return False
