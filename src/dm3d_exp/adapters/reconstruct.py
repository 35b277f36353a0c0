"""Sequential fixed-mask reconstruction of a real detector's prunable layers (METHOD.md §11.1).

Layers are taken in forward order, ``layers_per_pass`` at a time (SparseGPT-style): one calibration pass
records the inputs of the pass's layers in the current model — whose earlier layers are already pruned and
reconstructed, and whose later layers are still dense — then every layer of the pass is solved with its
mask (:func:`dm3d_exp.core.reconstruct.reconstruct_rows`) and written back. ``layers_per_pass >= L`` is the
"parallel" variant (every input from the dense model, one pass). ``target: dense_outputs`` also records
the same output sites in the dense model (X_d), so the solve corrects upstream error as well.
Output sites are subsampled per layer and forward (``max_sites``, a seeded choice shared by both models).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.levels import level_counts
from ..core.reconstruct import LayerStatistics, RowSolve, check_rank, reconstruct_rows
from .heads import head_outputs
from .layers import from_rows, layer_im2col, layer_partners, layer_spec, rows, weight_view


@dataclass(frozen=True)
class ReconstructionSpec:
    """Settings of the reconstruction (the ``recovery`` config section's reconstruction keys)."""

    target: str = "dense_weights"   # 'dense_weights' | 'dense_outputs'
    damping: float = 1e-4           # alpha: damp = alpha * mean(diag H)
    max_sites: int = 4096           # output sites per layer and forward (seeded subsample)
    layers_per_pass: int = 1        # 1: fully sequential; >= number of layers: parallel (dense inputs)
    seed: int = 0


class _StopForward(Exception):
    """Raised by a hook once every layer of the pass has fired: the rest of the forward is not needed."""


def _site_choice(n: int, max_sites: int, seed: int, frame: int, name: str, call: int) -> torch.Tensor | None:
    if n <= max_sites:
        return None
    digest = hashlib.sha256(f"{seed}/{frame}/{name}/{call}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.randperm(n, generator=gen)[:max_sites].sort().values


class _Recorder:
    """Forward hooks that im2col the inputs of ``names`` on every call and hand them to ``sink``."""

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module], names: Sequence[str],
                 sink: Callable[[str, int, torch.Tensor], None], stop_when_done: bool):
        self.layers, self.names, self.sink = layers, list(names), sink
        self.partners = layer_partners(model, {n: layers[n] for n in names})
        self.stop_when_done = stop_when_done
        self.calls: dict[str, int] = {}
        self._handles = []

    def __enter__(self):
        self._handles = [self.layers[n].register_forward_hook(self._hook(n)) for n in self.names]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()

    def _hook(self, name: str):
        def hook(mod, inputs, output):
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            with torch.no_grad():
                self.sink(name, call, layer_im2col(mod, inputs, output, self.partners.get(name)))
            if self.stop_when_done and len(self.calls) == len(self.names):
                raise _StopForward

        return hook

    def run(self, model: nn.Module, inputs, samples) -> None:
        self.calls = {}
        try:
            with torch.no_grad():
                head_outputs(model, inputs, samples)
        except _StopForward:
            pass


def forward_order(model: nn.Module, layers: Mapping[str, nn.Module], batches: Sequence) -> list[str]:
    """Layer names in the order their forward first runs on ``batches``; layers that never run come last.

    One full forward of ``model`` per batch: run on the dense model before any layer changes, it also
    stores each batch's frozen positions (PV-RCNN's dense proposals, :mod:`.heads`), which the
    early-stopped calibration passes after it would otherwise take from a partly pruned model.
    """
    seen: list[str] = []

    def fired(name):
        if name not in seen:
            seen.append(name)

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: fired(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                head_outputs(model, *batch)
    finally:
        for h in handles:
            h.remove()
    return seen + [n for n in layers if n not in seen]


def _layer_record(status: str, stats: LayerStatistics | None, solve=None) -> dict:
    rec = {"status": status, "samples": stats.n if stats else 0}
    if solve is not None:
        rec.update(error_zeroed=solve.error_zeroed, error_reconstructed=solve.error_reconstructed,
                   damping=solve.damping)
    return rec


def _fitted(name: str, w: torch.Tensor, mask: torch.Tensor, stats: LayerStatistics, alpha: float,
            dense_weights: bool) -> tuple[torch.Tensor, str, RowSolve | None]:
    """(weights, status, solve) of one layer for one mask: the fixed-mask reconstruction of the canonical
    view ``w`` (float64, CPU), or the documented fallback — zero when fully pruned, the dense weights when
    nothing is pruned (target dense_weights), the zeroed weights when the layer saw no (non-zero) input,
    stayed singular at 1000x the damping, or came out worse than zeroing. Raises ReconstructionError for
    fewer samples than inputs."""
    w64 = w.detach().to(torch.float64).cpu()
    mask = mask.cpu()
    if not bool(mask.any()):
        return torch.zeros_like(w64), "fully_pruned", None
    if dense_weights and bool(mask.all()):  # nothing pruned: the dense weights are optimal
        return w64, "unpruned_kept_dense", None
    if stats.silent:  # the layer never ran on the frames, or all its inputs were zero
        return w64 * mask, "no_calibration_input" if stats.n == 0 else "zero_inputs_kept_zeroed", None
    check_rank(name, stats.n, stats.d)
    h, c, dd = stats.moments()
    damping = alpha
    for _ in range(4):
        try:
            solve = reconstruct_rows(rows(w64), rows(mask), h, c, dd, alpha=damping)
            break
        except torch.linalg.LinAlgError:
            damping *= 10.0
    else:
        return w64 * mask, "singular_kept_zeroed", None
    if not solve.error_reconstructed <= solve.error_zeroed:  # never worse than zeroing (also catches NaN)
        return w64 * mask, "worse_than_zeroed_kept_zeroed", solve
    status = "reconstructed" if damping == alpha else f"reconstructed_damping_{damping:g}"
    return from_rows(solve.weights, w.shape), status, solve


@torch.no_grad()
def _solve_layer(name: str, module: nn.Module, mask: torch.Tensor, stats: LayerStatistics,
                 spec: ReconstructionSpec) -> dict:
    """Reconstruct one layer in place (weights already dense); the per-layer record of what happened."""
    view = weight_view(module)
    weights, status, solve = _fitted(name, view, mask, stats, spec.damping, spec.target == "dense_weights")
    view.copy_(weights.to(device=view.device, dtype=view.dtype))
    return _layer_record(status, stats, solve)


def reconstruct_model(model: nn.Module, layers: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor],
                      batches: Sequence, spec: ReconstructionSpec, dense_model: nn.Module | None = None,
                      dense_layers: Mapping[str, nn.Module] | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Prune ``model``'s ``layers`` to ``masks`` (canonical-view bool, True = kept) and reconstruct them.

    ``model`` must hold the dense weights on entry. ``target: dense_outputs`` needs ``dense_model`` (an
    untouched copy) and its ``dense_layers`` of the same names. Returns {layer: record} with status
    (reconstructed, fully_pruned, no_calibration_input, ...), sample count and relative calibration
    errors zeroed vs reconstructed. Raises ReconstructionError for a layer with fewer samples than inputs.
    """
    cross = spec.target == "dense_outputs"
    if spec.target not in ("dense_weights", "dense_outputs"):
        raise ValueError(f"target={spec.target!r}: expected 'dense_weights' or 'dense_outputs'")
    if cross and (dense_model is None or dense_layers is None):
        raise ValueError("target='dense_outputs' needs the dense model and its layers")
    names = [n for n in forward_order(model, layers, batches) if n in masks]
    step = max(1, int(spec.layers_per_pass))
    records: dict[str, dict] = {}
    for start in range(0, len(names), step):
        chunk = names[start:start + step]
        stats = record_statistics(model, layers, chunk, batches, spec, dense_model if cross else None, dense_layers)
        for n in chunk:
            records[n] = _solve_layer(n, layers[n], masks[n], stats[n], spec)
            if progress:
                progress(1)
    return records


def record_statistics(model: nn.Module, layers: Mapping[str, nn.Module], names: Sequence[str], batches: Sequence,
                      spec: ReconstructionSpec, dense_model: nn.Module | None = None,
                      dense_layers: Mapping[str, nn.Module] | None = None) -> dict[str, LayerStatistics]:
    """One calibration pass over ``batches`` recording the im2col inputs of ``names`` in ``model`` (and, with
    ``dense_model``, the same output sites in the dense model: the cross moments of target dense_outputs)."""
    cross = dense_model is not None
    stats = {n: LayerStatistics(layer_spec(layers[n]).taps * layer_spec(layers[n]).cin, cross) for n in names}
    dense_x: dict[tuple[str, int], torch.Tensor] = {}
    frame = 0

    def keep_sites(name, call, x):
        idx = _site_choice(x.shape[0], spec.max_sites, spec.seed, frame, name, call)
        return x if idx is None else x[idx.to(x.device)]

    def dense_sink(name, call, x):
        dense_x[(name, call)] = keep_sites(name, call, x)

    def sink(name, call, x):
        x_p = keep_sites(name, call, x)
        stats[name].add(x_p, dense_x.pop((name, call)) if cross else None)

    dense_rec = _Recorder(dense_model, dense_layers, names, dense_sink, stop_when_done=True) if cross else None
    with _Recorder(model, layers, names, sink, stop_when_done=True) as rec:
        for frame, (inputs, samples) in enumerate(batches):
            if dense_rec is not None:
                with dense_rec:
                    dense_rec.run(dense_model, inputs, samples)
            rec.run(model, inputs, samples)
            dense_x.clear()
    return stats


@torch.no_grad()
def reconstructed_perturbations(layers: Mapping[str, nn.Module], orders: Mapping[str, torch.Tensor],
                                stats: Mapping[str, LayerStatistics], num_levels: int, alpha: float,
                                progress: Callable[[int], None] | None = None):
    """dW^_l(k_j) = W^_l(k_j) - W_l at the coarse counts k_j = level_counts(num_levels) (METHOD §11.3).

    The mask at count m keeps all but the first m weights of the layer's order (the allocation's levels);
    W^ is the fixed-mask reconstruction from dense-input statistics (parallel); the last count (every
    weight pruned) is -W. The fallbacks are :func:`reconstruct_model`'s (:func:`_fitted`): zeroed where a
    solve stays singular or is worse than zeroing, or the layer saw no (non-zero) input.
    Returns ({name: (C, |W|) float64 rows of the flattened canonical view}, {name: strictly increasing
    counts starting at 0}). Raises ReconstructionError for too few samples.
    """
    perturbations, counts = {}, {}
    for name, module in layers.items():
        view = weight_view(module).detach()
        numel = view.numel()
        m = level_counts(num_levels, numel)
        m = m[np.r_[True, np.diff(m) > 0]]
        w = view.to(torch.float64).cpu()
        out = torch.zeros(len(m), numel, dtype=torch.float64)
        for j, pruned in enumerate(m[1:], start=1):
            flat_mask = torch.ones(numel, dtype=torch.bool)
            flat_mask[orders[name][:int(pruned)].cpu()] = False
            fitted, _, _ = _fitted(name, w, flat_mask.reshape(view.shape), stats[name], alpha, dense_weights=True)
            out[j] = (fitted - w).reshape(-1)
        perturbations[name], counts[name] = out, m
        if progress:
            progress(1)
    return perturbations, counts
