"""Masks on canonical [K, Cout, Cin] views: bake zeros in place (METHOD.md sections 1, 7)."""

from __future__ import annotations

import torch


@torch.no_grad()
def apply_mask_(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w <- w * mask in place (zeros baked into the tensor, and into the parameter when w is a view of it)."""
    if mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask {mask.dtype} {tuple(mask.shape)}: expected a bool mask of shape {tuple(w.shape)}")
    return w.masked_fill_(~mask.to(w.device), 0)
