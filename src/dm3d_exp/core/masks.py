"""Masks on canonical [K, Cout, Cin] views: bake zeros in place and count what is left (METHOD.md sections 1, 7)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


@torch.no_grad()
def apply_mask_(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w <- w * mask in place (zeros baked into the tensor, and into the parameter when w is a view of it)."""
    if mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask {mask.dtype} {tuple(mask.shape)}: expected a bool mask of shape {tuple(w.shape)}")
    return w.masked_fill_(~mask.to(w.device), 0)


@torch.no_grad()
def apply_masks_(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """apply_mask_ for every named layer; the names of masks must be a subset of the names of weights."""
    unknown = set(masks) - set(weights)
    if unknown:
        raise ValueError(f"mask names {sorted(unknown)}: expected names of weights {sorted(weights)}")
    for name, mask in masks.items():
        apply_mask_(weights[name], mask)


def sparsity_report(weights: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """Per-layer and total {numel, nonzero, sparsity = 1 - nonzero / numel}, JSON-ready."""
    if not weights:
        raise ValueError("weights: expected at least one layer")
    layers = {}
    for name, w in weights.items():
        numel, nonzero = w.numel(), int(torch.count_nonzero(w))
        layers[name] = {"numel": numel, "nonzero": nonzero, "sparsity": 1.0 - nonzero / numel}
    numel = sum(v["numel"] for v in layers.values())
    nonzero = sum(v["nonzero"] for v in layers.values())
    return {"layers": layers, "total": {"numel": numel, "nonzero": nonzero, "sparsity": 1.0 - nonzero / numel}}
