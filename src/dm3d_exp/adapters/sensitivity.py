"""Sensitivity curves of a real detector: the model-side loops around the framework-free core.

Fisher (METHOD.md §4-5): for every calibration frame and probe r, back-propagate the probe scalar sigma
of the head outputs to the prunable weights and stream the gradients into
:class:`~dm3d_exp.core.fisher.FisherCurveAccumulator` (no per-sample gradient is stored).
Reconstruction-aware (§11.3): the same streamed gradients dotted with reconstructed perturbations at a few
coarse levels. Measured (§5 ablation): prune one layer at a time and measure D on the calibration frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.distortion import detection_distortion, foreground_weights, probe_scalar
from ..core.fisher import FisherCurveAccumulator, GradientMeanAccumulator, PerturbationCurveAccumulator
from ..core.measured import measured_curves
from ..core.ranking import apply_mask_, magnitude_order, mask_from_order, taylor_order
from .heads import HeadExtractor, head_extractor, head_outputs
from .layers import weight_view
from .reconstruct import ReconstructionSpec, record_statistics, reconstructed_perturbations

Batch = tuple  # (inputs, data_samples) as returned by detector.points_batch / the data loaders


@dataclass
class DistortionSpec:
    """How D is formed from head outputs (METHOD §2): lambda per group and two extensions (not in the
    paper): foreground weighting and per-channel variance normalisation (core.distortion)."""

    lambda_loc: float = 1.0
    lambda_conf: float = 1.0
    foreground_weighting: bool = False
    normalize: str = "none"  # 'none' | 'channel_variance'

    def lambdas(self) -> dict[str, float]:
        return {"loc": self.lambda_loc, "conf": self.lambda_conf}

    def terms(self, dense: Mapping[str, torch.Tensor], head: HeadExtractor) -> dict:
        """Keyword arguments of detection_distortion / probe_scalar for these dense outputs of ``head``."""
        return {"groups": {n: head.group(n) for n in dense}, "lambdas": self.lambdas(),
                "fg_weights": _fg_weights(dense, head, self.foreground_weighting), "normalize": self.normalize}


@dataclass
class FisherSpec:
    probe: str = "random"  # 'random' (unbiased) | 'mean_square' (author-faithful)
    probes_per_frame: int = 1
    num_levels: int = 1000
    damping: float = 1e-7
    damping_mode: str = "absolute"
    ranking: str = "magnitude"  # 'magnitude' | 'taylor'
    form: str = "gauss_newton"
    seed: int = 0
    distortion: DistortionSpec = field(default_factory=DistortionSpec)


def _fg_weights(outputs: Mapping[str, torch.Tensor], head: HeadExtractor, enabled: bool):
    """Extension: weight every output position by the dense model's max class score there (the head's
    confidence sources)."""
    if not enabled:
        return None
    sources = head.confidence_sources(outputs)
    weights = {c: foreground_weights(outputs[c]) for c in set(sources.values())}
    return {n: weights[c] for n, c in sources.items()}


def _view_grads(layers: Mapping[str, nn.Module], grads: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: weight_view(m, g) for (name, m), g in zip(layers.items(), grads)}


def _frame_gradients(model, layers, batches, spec: FisherSpec, kind: str, probes: int, generator):
    """Yield canonical-view gradients of sigma for every (frame, probe)."""
    params = [m.weight for m in layers.values()]
    head = head_extractor(model)
    for inputs, samples in batches:
        outputs = head_outputs(model, inputs, samples)
        terms = spec.distortion.terms({k: v.detach() for k, v in outputs.items()}, head)
        for r in range(probes):
            sigma = probe_scalar(outputs, kind=kind, generator=generator, **terms)
            grads = torch.autograd.grad(sigma, params, retain_graph=r < probes - 1)
            yield _view_grads(layers, grads)


def intra_layer_orders(model, layers: Mapping[str, nn.Module], batches: Sequence[Batch], spec: FisherSpec):
    """Pruned-first order of every layer's weights (METHOD §6): |w| or |w * g_mean| (mean_square probe)."""
    views = {n: weight_view(m).detach() for n, m in layers.items()}
    if spec.ranking == "magnitude":
        return {n: magnitude_order(w) for n, w in views.items()}
    if spec.ranking != "taylor":
        raise ValueError(f"ranking={spec.ranking!r}: expected 'magnitude' or 'taylor'")
    acc = GradientMeanAccumulator()
    for grads in _frame_gradients(model, layers, batches, spec, "mean_square", 1, None):
        acc.add(grads)
    g_mean = acc.mean()
    return {n: taylor_order(w, g_mean[n].to(w.dtype)) for n, w in views.items()}


def fisher_curves(model: nn.Module, layers: Mapping[str, nn.Module], batches: Sequence[Batch],
                  spec: FisherSpec, orders: Mapping[str, torch.Tensor], progress: Callable | None = None):
    """delta_l(k), k = 0..K, for every layer from N frames x R probes (METHOD §4-5)."""
    generator = torch.Generator().manual_seed(spec.seed)
    views = {n: weight_view(m).detach() for n, m in layers.items()}
    acc = FisherCurveAccumulator(views, orders, spec.num_levels, spec.damping, spec.damping_mode)
    for grads in _frame_gradients(model, layers, batches, spec, spec.probe, spec.probes_per_frame, generator):
        acc.add(grads)
        if progress:
            progress()
    return acc.curves(spec.form)


def reconstructed_fisher_curves(model: nn.Module, layers: Mapping[str, nn.Module], batches: Sequence[Batch],
                                spec: FisherSpec, orders: Mapping[str, torch.Tensor], recon_batches: Sequence[Batch],
                                recon: ReconstructionSpec, coarse_levels: int,
                                progress: Callable | None = None) -> dict[str, np.ndarray]:
    """delta_l(k) of the reconstructed perturbations dW^_l(k) (METHOD §11.3): dense-input statistics on
    ``recon_batches`` (one pass), per layer the fixed-mask reconstruction at ``coarse_levels`` + 1 counts,
    then the probe gradients of :func:`fisher_curves` streamed into the perturbation accumulator."""
    stats = record_statistics(model, layers, list(layers), recon_batches, recon)
    perturbations, counts = reconstructed_perturbations(layers, orders, stats, coarse_levels, recon.damping,
                                                        progress=progress)
    del stats
    acc = PerturbationCurveAccumulator(perturbations, counts, spec.num_levels, spec.damping, spec.damping_mode)
    generator = torch.Generator().manual_seed(spec.seed)
    for grads in _frame_gradients(model, layers, batches, spec, spec.probe, spec.probes_per_frame, generator):
        acc.add(grads)
        if progress:
            progress()
    return acc.curves(spec.form)


class DistortionMeter:
    """D of the current model against cached dense head outputs on fixed frames (METHOD §2)."""

    def __init__(self, model: nn.Module, batches: Sequence[Batch], spec: DistortionSpec):
        self.model, self.batches, self.spec = model, list(batches), spec
        with torch.no_grad():
            self.dense = [head_outputs(model, i, s) for i, s in self.batches]
        head = head_extractor(model)
        self.terms = [spec.terms(d, head) for d in self.dense]

    @torch.no_grad()
    def __call__(self, model: nn.Module | None = None) -> float:
        """Mean over frames of D(dense, ``model``) (default: the current state of the meter's model)."""
        model = self.model if model is None else model
        total = 0.0
        for (inputs, samples), dense, terms in zip(self.batches, self.dense, self.terms):
            out = head_outputs(model, inputs, samples)
            total += float(detection_distortion(dense, out, **terms))
        return total / len(self.batches)


def measured_layer_curves(model: nn.Module, layers: Mapping[str, nn.Module], batches: Sequence[Batch],
                          spec: FisherSpec, orders: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """ICCV'23-style curves: L x (K+1) x N forwards, each layer pruned alone (METHOD §5 ablation)."""
    meter = DistortionMeter(model, batches, spec.distortion)
    views = {n: weight_view(m) for n, m in layers.items()}

    @torch.no_grad()
    def distortion_fn(name: str, pruned: torch.Tensor) -> float:
        view = views[name]
        saved = view.clone()
        view.copy_(pruned)
        try:
            return meter()
        finally:
            view.copy_(saved)

    return measured_curves({n: v.detach() for n, v in views.items()}, orders, spec.num_levels, distortion_fn)


@torch.no_grad()
def apply_levels(layers: Mapping[str, nn.Module], orders: Mapping[str, torch.Tensor], counts: Mapping[str, int]):
    """Zero the first ``counts[name]`` weights of each layer's order in place (the keep-mask of
    :func:`dm3d_exp.core.ranking.mask_from_order`, baked by :func:`dm3d_exp.core.ranking.apply_mask_`);
    return the saved weights."""
    saved = {}
    for name, m in layers.items():
        view = weight_view(m)  # may be a non-contiguous view of the parameter: masked in place
        saved[name] = view.clone()
        apply_mask_(view, mask_from_order(orders[name], tuple(view.shape), int(counts.get(name, 0))))
    return saved


@torch.no_grad()
def restore(layers: Mapping[str, nn.Module], saved: Mapping[str, torch.Tensor]) -> None:
    for name, w in saved.items():
        weight_view(layers[name]).copy_(w)


def additivity_check(meter: DistortionMeter, layers: Mapping[str, nn.Module], orders: Mapping[str, torch.Tensor],
                     allocations: Sequence[Mapping[str, int]]) -> list[dict[str, float]]:
    """For each allocation (pruned counts per layer): sum of single-layer D vs the joint D (METHOD §3).

    Returns rows {sum_single, joint, ratio}; ratio near 1 supports the additivity assumption.
    """
    rows = []
    for counts in allocations:
        single = 0.0
        for name in counts:
            saved = apply_levels({name: layers[name]}, orders, counts)
            single += meter()
            restore(layers, saved)
        saved = apply_levels(layers, orders, counts)
        joint = meter()
        restore(layers, saved)
        rows.append({"sum_single": single, "joint": joint, "ratio": joint / single if single > 0 else float("nan")})
    return rows
