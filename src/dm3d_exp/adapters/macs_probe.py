"""Measure per-tap pair counts n_j of every viewable layer by forward hooks on reference frames.

Dense layers (METHOD.md §7): Conv n_j = H_out*W_out (every tap), ConvTranspose n_j = H_in*W_in,
Linear n_j = rows. Sparse layers: rulebook pair counts from the active sites (see ``spconv_pairs``).
Counts are summed over all forwards and divided by the number of frames the caller declares, so the
result is the average per frame over a fixed reference set.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .layers import layer_spec, prunable_modules
from .spconv_pairs import tap_pair_counts


def _dense_pairs(module: nn.Module, spec, inputs, output) -> float:
    if spec.kind == "linear":
        x = inputs[0]
        return x.numel() / x.shape[-1]
    if spec.kind == "conv":
        return float(output.shape[0] * math.prod(output.shape[2:]))
    if spec.kind == "conv_transpose":
        x = inputs[0]
        return float(x.shape[0] * math.prod(x.shape[2:]))
    raise TypeError(spec.kind)


class PairRecorder:
    """Context manager: hooks that accumulate per-tap pair counts for every layer with a view."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(prunable_modules(model))
        self.totals = {name: np.zeros(layer_spec(m).taps) for name, m in self.modules.items()}
        self.frames = 0
        self._handles: list = []
        self._by_key = {getattr(m, "indice_key", None): m for m in self.modules.values()
                        if layer_spec(m).kind == "sparse_conv"}

    def _hook(self, name: str):
        module = self.modules[name]
        spec = layer_spec(module)

        def hook(mod, inputs, output):
            if spec.kind in ("linear", "conv", "conv_transpose"):
                self.totals[name] += _dense_pairs(mod, spec, inputs, output)
                return
            if getattr(mod, "transposed", False) and not getattr(mod, "inverse", False):
                raise NotImplementedError(f"{name}: MACs accounting of SparseConvTranspose layers is not supported")
            if spec.kind == "sparse_inverse_conv":
                fwd = self._by_key.get(mod.indice_key)
                if fwd is None:
                    raise ValueError(f"{name}: inverse conv indice_key {mod.indice_key!r} has no matching SparseConv")
                sites, shape, conv = output, output.spatial_shape, fwd
            else:
                sites, shape, conv = inputs[0], inputs[0].spatial_shape, mod
            self.totals[name] += tap_pair_counts(
                sites.indices.detach().cpu().numpy(), shape, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, subm=spec.kind == "subm_conv")

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
