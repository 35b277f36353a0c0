"""Stage code versions derived from the import closure (pipeline/code_version.py, issue 11.2)."""
import shutil

import pytest

from dm3d_exp.store import code_version as cv

STAGES = ("calibrate", "sensitivity", "allocate", "prune", "recover", "evaluate")


def _versions(root):
    return {s: cv.digest(cv.closure(f"dm3d_exp.stages.{s}", root), root) for s in STAGES}


@pytest.fixture
def package(tmp_path):
    """A copy of the dm3d_exp sources to edit."""
    root = tmp_path / "dm3d_exp"
    shutil.copytree(cv.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_closures_contain_what_the_stages_call():
    """The modules the hand-written lists of issue 11.2 missed."""
    short = {s: {m.removeprefix("dm3d_exp.") for m in cv.closure(f"dm3d_exp.stages.{s}")} for s in STAGES}
    every = {"adapters.detector", "adapters.mmdet3d_modules", "adapters.runtime", "adapters.spconv_cpu",
             "stages.context", "schema"}
    assert all(every <= short[s] for s in STAGES)
    assert {"adapters.heads", "core.macs", "adapters.data", "adapters.macs_probe"} <= short["calibrate"]
    assert {"adapters.sensitivity", "adapters.layers", "adapters.checkpoint"} <= short["prune"]
    assert {"kitti.eval", "kitti.iou", "kitti.format", "kitti.bootstrap"} <= short["evaluate"]
    assert "core.allocate" not in short["calibrate"] | short["sensitivity"] | short["recover"]
    assert "adapters.evaluation" not in set().union(*(short[s] for s in STAGES if s != "evaluate"))
    assert "stages.evaluate" not in set().union(*(short[s] for s in STAGES if s != "evaluate"))


@pytest.mark.parametrize("module,changed", [
    ("core/allocate.py", {"allocate", "prune"}),
    ("stages/evaluate.py", {"evaluate"}),
    ("kitti/iou.py", {"evaluate"}),  # the metric: only the evaluate stage imports adapters.evaluation
    ("adapters/kitti_metric.py", {"evaluate"}),
    ("core/statcorr.py", {"sensitivity", "allocate", "prune", "recover", "evaluate"}),  # via stages.recover
    ("adapters/spconv_cpu.py", set(STAGES)),
    ("core/reconstruct.py", {"sensitivity", "allocate", "prune", "recover", "evaluate"}),
])
def test_editing_a_module_changes_exactly_the_stages_that_reach_it(package, module, changed):
    before = _versions(package)
    with open(package / module, "a") as f:
        f.write("\n# edited\n")
    after = _versions(package)
    assert {s for s in STAGES if before[s] != after[s]} == changed


def test_function_level_imports_and_new_modules_count(package):
    before = _versions(package)
    (package / "core" / "extra_rule.py").write_text("VALUE = 1\n")
    prune = package / "stages" / "prune.py"
    prune.write_text(prune.read_text() + "\n\ndef _late():\n    from ..core import extra_rule\n    return extra_rule\n")
    assert "dm3d_exp.core.extra_rule" in cv.closure("dm3d_exp.stages.prune", package)
    mid = _versions(package)
    (package / "core" / "extra_rule.py").write_text("VALUE = 2\n")
    after = _versions(package)
    assert mid["prune"] != before["prune"] and after["prune"] != mid["prune"]
    assert after["calibrate"] == mid["calibrate"] == before["calibrate"]


def test_library_versions_are_part_of_the_version(monkeypatch):
    names = cv.closure("dm3d_exp.stages.calibrate")
    base = cv.digest(names)
    assert {"torch", "numpy", "mmdet3d"} <= set(cv.library_versions())
    real = cv.library_versions()
    monkeypatch.setattr(cv, "library_versions", lambda: {**real, "torch": "0.0"})
    assert cv.digest(names) != base
