"""Measured sensitivity curves, the ICCV'23-style ablation (METHOD.md section 5, `sensitivity.method: measured`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from .levels import level_counts, monotone_envelope
from .ranking import check_order


def measured_curves(
    weights: Mapping[str, torch.Tensor],
    orders: Mapping[str, torch.Tensor],
    num_levels: int,
    distortion_fn: Callable[[str, torch.Tensor], float],
    monotone: bool = True,
) -> dict[str, np.ndarray]:
    """delta_l(k) = D(model with only layer l pruned at level k), k = 0..K, each layer alone (METHOD §5).

    For each layer and level, the first m_k = (k * numel) // K weights of its order are zeroed in a copy of
    its canonical [K, Cout, Cin] weight and `distortion_fn(name, pruned)` is called; that callable must
    evaluate D on the calibration set with layer `name` set to `pruned`, then restore the model. The
    tensor is one buffer reused across calls (do not keep it). delta(0) = 0 by definition, and a level
    with the same m_k as the previous one reuses its value, so at most numel evaluations run per layer.
    """
    if set(weights) != set(orders):
        raise ValueError(f"order names {sorted(orders)}: expected the weight names {sorted(weights)}")
    curves = {}
    for name, w in weights.items():
        order = orders[name]
        check_order(order, w.numel(), f"order {name!r}")
        counts = level_counts(num_levels, w.numel())
        pruned = w.detach().clone(memory_format=torch.contiguous_format)
        flat = pruned.view(-1)
        curve = np.zeros(num_levels + 1, dtype=np.float64)
        for k in range(1, num_levels + 1):
            if counts[k] == counts[k - 1]:
                curve[k] = curve[k - 1]
                continue
            flat[order[counts[k - 1] : counts[k]]] = 0
            curve[k] = float(distortion_fn(name, pruned))
        curves[name] = monotone_envelope(curve) if monotone else curve
    return curves
