"""Measure per-tap pair counts n_j of every prunable layer by forward hooks on reference frames.

Each layer type counts its own pairs (``layers.layer_pairs``, METHOD.md §7: Conv n_j = H_out*W_out for
every tap, ConvTranspose n_j = H_in*W_in, Linear n_j = rows, spconv the rulebook pairs of the active sites).
Counts are summed over all forwards and divided by the number of frames the caller declares, so the
result is the average per frame over a fixed reference set.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layers import layer_pairs, layer_partners, layer_spec, prunable_modules


class PairRecorder:
    """Context manager: hooks that accumulate per-tap pair counts for every layer with a view."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(prunable_modules(model))
        self.totals = {name: np.zeros(layer_spec(m).taps) for name, m in self.modules.items()}
        self.frames = 0
        self._handles: list = []
        self.partners = layer_partners(model, self.modules)

    def _hook(self, name: str):
        partner = self.partners.get(name)

        def hook(mod, inputs, output):
            self.totals[name] += layer_pairs(mod, inputs, output, partner)

        return hook

    def __enter__(self) -> "PairRecorder":
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def add_frames(self, n: int) -> None:
        """Declare that ``n`` more frames went through the model (the averaging denominator)."""
        self.frames += int(n)

    def mean_pairs(self) -> dict[str, np.ndarray]:
        """Average per-frame pair counts per layer, float64 [K]."""
        if self.frames <= 0:
            raise ValueError("PairRecorder: no frames declared (call add_frames after each forward)")
        return {name: t / self.frames for name, t in self.totals.items()}


@torch.no_grad()
def record_pairs(model: nn.Module, run_batch, batches, frames_per_batch=lambda b: 1) -> dict[str, np.ndarray]:
    """Run ``run_batch(model, batch)`` for every batch under hooks; return mean per-frame pair counts."""
    with PairRecorder(model) as rec:
        for batch in batches:
            run_batch(model, batch)
            rec.add_frames(frames_per_batch(batch))
    return rec.mean_pairs()
