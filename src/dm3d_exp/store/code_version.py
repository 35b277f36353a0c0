"""Code versions of the stages, derived from what they import (so that they cannot drift).

``code_version(module)`` hashes the source of ``module`` and of every ``dm3d_exp`` module it imports,
transitively — module-level and function-level ``import`` statements alike, read with :mod:`ast`, never by
importing — plus the versions of the libraries whose numerics the stages depend on (torch, numpy, spconv,
cumm, mmcv, mmengine, mmdet, mmdet3d). Editing any module a stage can reach changes its key; editing a
module it cannot reach does not.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from types import ModuleType

from .. import __version__

PACKAGE = "dm3d_exp"
ROOT = Path(__file__).resolve().parents[1]  # .../dm3d_exp
LIBRARIES = ("torch", "numpy", "cumm", "mmcv", "mmengine", "mmdet", "mmdet3d")


def _module_file(root: Path, name: str) -> Path | None:
    """The source file of module ``name`` (dotted, starting with the package) under ``root``, if any."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(root: Path, name: str, path: Path) -> set[str]:
    """``dm3d_exp`` modules named by the import statements of one file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module` imports the module
    out = set()
    for mod in found:  # every package on the way is imported too (its __init__)
        parts = mod.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in out if _module_file(root, m) is not None}


def closure(name: str, root: Path = ROOT) -> list[str]:
    """Sorted names of ``name`` and every ``dm3d_exp`` module it imports, transitively."""
    seen, todo = set(), [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(root, mod)
        if path is not None:
            todo.extend(_imports(root, mod, path) - seen)
    return sorted(m for m in seen if _module_file(root, m) is not None)


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of the numerics-relevant libraries (spconv under whichever distribution name)."""
    out = {}
    spconv = metadata.packages_distributions().get("spconv", [])
    for dist in (*LIBRARIES, *spconv):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def digest(names: list[str], root: Path = ROOT) -> str:
    """Hash of the package version, the library versions and the sources of ``names``."""
    h = hashlib.sha256(json.dumps([__version__, library_versions()], sort_keys=True).encode())
    for name in names:
        h.update(name.encode())
        h.update(_module_file(root, name).read_bytes())
    return h.hexdigest()[:12]


def code_version(*modules: ModuleType) -> str:
    """Code version of a stage: :func:`digest` of the import closure of ``modules`` (module docstring)."""
    names = sorted(set().union(*(closure(m.__name__) for m in modules)))
    return digest(names)
