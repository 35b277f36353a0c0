"""Normalisation statistics after pruning (METHOD.md §11.2; beyond the paper): BN re-estimation."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .heads import head_outputs


def batchnorm_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm (1d/2d/3d, SyncBN) of the model that tracks running statistics."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[tuple],
                         progress: Callable[[int], None] | None = None) -> int:
    """Reset every BN's running mean/var and re-estimate them as the cumulative average over ``batches``
    (BN in train mode, everything else in eval mode, no gradient); the model is left in eval mode.

    Feed it the distribution the statistics were trained on (training pipeline and batch size, §11.2).
    Returns the number of batches seen; with none the statistics are left as they were.
    """
    bns = batchnorm_modules(model)
    saved = {n: (m.momentum, m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.eval()
    for m in bns.values():
        m.train()
    seen = 0
    try:
        for inputs, samples in batches:
            head_outputs(model, inputs, samples)
            seen += 1
            if progress:
                progress(1)
    finally:
        model.eval()
        for n, m in bns.items():
            m.momentum = saved[n][0]
            if seen == 0:
                m.running_mean.copy_(saved[n][1])
                m.running_var.copy_(saved[n][2])
    return seen
