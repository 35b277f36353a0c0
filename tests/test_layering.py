"""Dependencies point down (DEVELOPERS.md, issue 14): the import graph of the package, read with ast, against
the layers. core, kitti < data < adapters < {store, schema} < stages < pipeline < cli; base modules
(errors, fileio, progress, publish) under everything. Function-level imports count like module-level ones."""
import ast
from pathlib import Path

import dm3d_exp

ROOT = Path(dm3d_exp.__file__).parent
BASE = {"errors", "fileio", "progress", "publish"}
# unit -> the project units it may import (besides itself and the package root's __version__)
ALLOWED = {
    "errors": set(), "fileio": set(), "progress": set(), "publish": set(),
    "core": set(),
    "kitti": BASE,
    "data": BASE | {"kitti"},
    "adapters": BASE | {"core", "kitti", "data"},
    "store": BASE,
    "schema": BASE | {"core", "kitti"},
    "stages": BASE | {"core", "kitti", "data", "adapters", "store", "schema"},
    "training": BASE | {"core", "kitti", "data", "adapters"},
    "prepare": BASE | {"adapters"},
    "plots": BASE,
    "pipeline": BASE | {"core", "kitti", "data", "adapters", "store", "schema", "stages", "plots"},
    "cli": BASE | {"kitti", "data", "pipeline", "training", "prepare"},
}
FRAMEWORKS = {"mmdet3d", "mmdet", "mmengine", "mmcv", "spconv", "hydra", "omegaconf", "mlflow", "pandas", "matplotlib"}
FORBIDDEN = {"core": FRAMEWORKS, "adapters": {"hydra", "omegaconf", "mlflow"}, "stages": {"hydra", "mlflow"}}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_module(name: str) -> bool:
    base = ROOT.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, module: str):
    """(project modules, top-level third-party names) imported anywhere in one file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    own, third = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            (own if name.split(".")[0] == "dm3d_exp" else third).add(name if name.startswith("dm3d_exp") else name.split(".")[0])
    return own, third


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def test_every_module_imports_only_the_layers_below_it():
    violations = []
    units = set()
    for module, path in _modules():
        unit = _unit(module)
        if not unit:
            continue
        units.add(unit)
        assert unit in ALLOWED, f"{module}: unit {unit!r} has no layer in ALLOWED; add it where it belongs"
        own, third = _imports(path, module)
        for target in own:
            tu = _unit(target)
            if tu and tu != unit and tu not in ALLOWED[unit]:
                violations.append(f"{module} imports {target} ({unit} -> {tu})")
        for lib in third & FORBIDDEN.get(unit, set()):
            violations.append(f"{module} imports {lib} (forbidden in {unit})")
    assert not violations, "\n".join(sorted(violations))
    assert {"core", "adapters", "stages", "pipeline", "store", "schema"} <= units


def test_the_check_sees_relative_function_level_and_package_imports(tmp_path):
    """The parser behind the rule: an upward import hidden in a function, relative, is found."""
    path = tmp_path / "m.py"
    path.write_text("from ..core.fisher import x\ndef f():\n    from ..pipeline import cache\n    import mlflow.tracking\n")
    own, third = _imports(path, "dm3d_exp.stages.m")
    assert own == {"dm3d_exp.core.fisher", "dm3d_exp.pipeline"} and third == {"mlflow"}
    assert {_unit(m) for m in own} - ALLOWED["stages"] == {"pipeline"}
