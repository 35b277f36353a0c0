"""Pruned checkpoints in the detector's own format: zeros baked into ``weight``, nothing else added.

The file is what mmengine's ``save_checkpoint`` writes (``{'meta', 'state_dict'}``), loadable by
mmdet3d's tools (``load_checkpoint(model, path, strict=True)``) unchanged: no ``weight_orig`` /
``weight_mask`` keys (torch.nn.utils.prune reparametrisations are removed first), fp32 weights only.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..fileio import atomic_write_bytes


def remove_reparametrizations(model: nn.Module) -> None:
    """Bake torch.nn.utils.prune masks into plain weights (``weight = weight_orig * weight_mask``)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model``'s state dict (CPU, detached) with ``meta`` atomically to ``path``."""
    import io

    remove_reparametrizations(model)
    raw = model.state_dict()
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in raw.items())
    # keep the per-module versions: mmdet3d permutes spconv weights of modules saved without version 2
    state._metadata = getattr(raw, "_metadata", OrderedDict())
    bad = [k for k in state if k.endswith(("_orig", "_mask"))]
    if bad:
        raise ValueError(f"state dict still has pruning reparametrisation keys {bad[:3]}")
    buf = io.BytesIO()
    torch.save({"meta": dict(meta or {}), "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def nonzero_report(model: nn.Module, names) -> dict[str, int]:
    """Non-zero and total weights over the given prunable module names."""
    mods = dict(model.named_modules())
    nnz = sum(int(torch.count_nonzero(mods[n].weight)) for n in names)
    total = sum(mods[n].weight.numel() for n in names)
    return {"params_nonzero": nnz, "params_total": total}
