"""The pruning-method registry: what each ``pruning.method`` allocates with and which settings it reads.

Every method is one :class:`Method`: the DP over distortion curves (``curves`` names the curves: the
configured sensitivity or ``measured`` ones), a baseline ``rule`` over magnitude-order prefixes (METHOD.md
§9, :mod:`.baselines`) or neither (``dense``: nothing pruned). ``honours`` lists the ``pruning.*``
settings beyond the shared ones (method, flops_target, denominator, macs_mode, prunable) that change its
result: the allocate stage keeps the others out of the method's cache key, and the schema refuses a
non-default value of one it ignores (a precision knob such as budget_units excepted, so that one sweep
can set it for every method). A new method is one file that calls :func:`register_method`
(imported by this module) and its test.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .registry import Registry

# pruning.* settings only some methods read, and their defaults (PruningConf takes them from here)
OPTIONAL_SETTINGS = {"allocator": "dp", "budget_units": 10000, "min_density": 0.0}
PRECISION_SETTINGS = ("budget_units",)  # ignored without complaint by the methods that do not read them

# rule(sorted_abs, prefix, costs, budget) -> CountAllocation; sorted_abs[l] = |w| of layer l in magnitude order
Rule = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], Sequence, float], object]


@dataclass(frozen=True)
class Method:
    """One pruning method. ``curves``: None (no curves), 'configured' (``sensitivity.method``) or 'measured'
    (one-layer-at-a-time measured D, METHOD §5); ``rule``: a baseline's per-layer counts; ``doc``: one line."""

    name: str
    doc: str
    curves: str | None = None
    rule: Rule | None = None
    honours: tuple[str, ...] = ()

    def __post_init__(self):
        if self.curves not in (None, "configured", "measured"):
            raise ValueError(f"method {self.name!r}: curves={self.curves!r}, expected None, 'configured' or 'measured'")
        if self.curves and self.rule:
            raise ValueError(f"method {self.name!r}: a method allocates by curves or by a rule, not both")
        unknown = set(self.honours) - set(OPTIONAL_SETTINGS)
        if unknown:
            raise ValueError(f"method {self.name!r} honours {sorted(unknown)}: expected some of {sorted(OPTIONAL_SETTINGS)}")

    @property
    def prunes(self) -> bool:
        return bool(self.curves or self.rule)


METHODS: Registry[Method] = Registry("pruning method")


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a taken name is refused)."""
    return METHODS.add(method.name, method)


def get_method(name: str) -> Method:
    """The registered method ``name`` (KeyError listing the registered ones)."""
    return METHODS.get(name)


_CURVE_SETTINGS = tuple(OPTIONAL_SETTINGS)
register_method(Method("dm3d", "exact DP over the Fisher distortion curves under the FLOPs budget (METHOD §4-8)",
                       curves="configured", honours=_CURVE_SETTINGS))
register_method(Method("rd_measured", "the DP over measured one-layer-at-a-time curves (METHOD §5 ablation)",
                       curves="measured", honours=_CURVE_SETTINGS))
register_method(Method("dense", "nothing pruned: the reference row"))

# the baselines register themselves; importing them last keeps one registration order whichever module
# is imported first
from . import baselines as _baselines  # noqa: E402,F401
