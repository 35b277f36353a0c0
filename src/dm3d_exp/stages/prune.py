"""Stage 4 — prune: bake the allocation's masks into the weights and export a detector checkpoint.

Each layer loses the first ``pruned`` weights of its order (the sensitivity stage's for dm3d /
rd_measured, magnitude for the baselines), so masks are nested in k exactly as the curves assumed.
Artifacts: ``pruned.pth`` (mmdet3d-loadable, zeros baked in) and ``masks.npz`` (packed bits per layer,
canonical [K, Cout, Cin] order, 1 = kept).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..adapters.checkpoint import nonzero_report, save_checkpoint
from ..adapters.layers import weight_view
from ..adapters.sensitivity import apply_levels
from ..core.ranking import magnitude_order
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from . import allocate, sensitivity
from .context import RunContext

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def run(ctx: RunContext, alloc: CacheEntry, sens: CacheEntry | None) -> CacheEntry:
    """Zero each layer's allocated count of weights in its order (the sensitivity's, else magnitude): artifacts
    ``pruned.pth`` and ``masks.npz`` (packed bits, True = kept); key: the allocation's key + code."""
    def compute(out: Path):
        plan = allocate.load(alloc)
        model = ctx.model()
        layers = ctx.prunable_layers(model)
        if sens is not None:
            _, orders = sensitivity.load(sens)
        else:
            orders = {n: magnitude_order(weight_view(m).detach()) for n, m in layers.items()}
        counts = {n: v["pruned"] for n, v in plan["layers"].items()}
        apply_levels(layers, orders, counts)
        save_checkpoint(model, out / "pruned.pth",
                        meta={"dm3d": {"method": plan["method"], "flops_target": plan["flops_target"],
                                       "allocation_key": alloc.key}})
        masks = {n: np.packbits(weight_view(m).detach().cpu().numpy().reshape(-1) != 0) for n, m in layers.items()}
        np.savez_compressed(out / "masks.npz", **masks)
        return nonzero_report(model, layers)

    return ctx.cache.get_or_compute("prune", {"allocate": alloc.key, "code": CODE}, compute)
