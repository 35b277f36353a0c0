"""Stage 2 — sensitivity: per-layer distortion curves delta_l(k), k = 0..K, and intra-layer orders.

fisher (dm3d): N calibration frames x R probes streamed into the Fisher accumulator (METHOD.md §4-5);
measured (rd_measured, or sensitivity.method=measured): each layer pruned alone at K levels (§5 ablation).
perturbation=reconstructed (and auto when recovery=reconstruct): the Fisher curves of the reconstructed
perturbations at ``coarse_levels`` levels (§11.3), from the recovery section's damping / sites / frames
(parallel, dense inputs), so that the allocation knows the reconstruction the recover stage applies.
Artifacts: ``curves.npz`` (name -> float64 [K+1]) and ``orders.npz`` (name -> int32 pruned-first order).
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..adapters.data import batches
from ..adapters.sensitivity import (DistortionSpec, FisherSpec, fisher_curves, intra_layer_orders,
                                    measured_layer_curves, reconstructed_fisher_curves)
from ..core.methods import get_method
from ..core.reconstruct import ReconstructionError
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from ..progress import progress_bar
from . import calibrate, recover
from .context import RunContext

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def effective_method(ctx: RunContext) -> str:
    """'measured' for pruning.method=rd_measured, else sensitivity.method."""
    return "measured" if get_method(ctx.conf.pruning.method).curves == "measured" else ctx.conf.sensitivity.method


def effective_perturbation(ctx: RunContext) -> str:
    """What the curves measure: sensitivity.perturbation, with 'auto' = 'reconstructed' exactly when the run
    reconstructs (recovery.method=reconstruct) and its curves are Fisher curves, else 'zeroed'."""
    p = ctx.conf.sensitivity.perturbation
    if p != "auto":
        return p
    return "reconstructed" if ctx.conf.recovery.method == "reconstruct" and effective_method(ctx) == "fisher" \
        else "zeroed"


def fisher_spec(ctx: RunContext) -> FisherSpec:
    """The sensitivity section as the adapters' FisherSpec (levels: measured_levels for measured curves)."""
    s = ctx.conf.sensitivity
    levels = s.measured_levels if effective_method(ctx) == "measured" else s.num_levels
    return FisherSpec(probe=s.probe, probes_per_frame=s.probes_per_frame, num_levels=levels, damping=s.damping,
                      damping_mode=s.damping_mode, ranking=s.ranking, form=s.form, seed=ctx.conf.calib.seed,
                      distortion=DistortionSpec(**{f.name: getattr(s, f.name) for f in fields(DistortionSpec)}))


def cache_inputs(ctx: RunContext, calib: CacheEntry) -> dict:
    """Key of the curves: calibrate key, the sensitivity keys the effective method uses, prunable set, code
    (and the reconstruction settings for reconstruction-aware curves)."""
    sens = ctx.section("sensitivity")
    sens["method"] = effective_method(ctx)
    sens.pop("measured_levels" if sens["method"] == "fisher" else "num_levels")
    sens["perturbation"] = effective_perturbation(ctx)
    inputs = {"calibrate": calib.key, "sensitivity": sens, "prunable": ctx.conf.pruning.prunable, "code": CODE}
    if sens["perturbation"] == "reconstructed":
        r = ctx.conf.recovery
        inputs["reconstruction"] = {"damping": r.damping, "max_sites": r.max_sites, "num_frames": r.num_frames,
                                    "seed": ctx.conf.seed}
    else:
        sens.pop("coarse_levels")
    return inputs


def run(ctx: RunContext, calib: CacheEntry) -> CacheEntry:
    """Per-layer distortion curves delta_l(k) and intra-layer orders on the calibration frames (METHOD §4-6,
    §11.3): artifacts ``curves.npz`` and ``orders.npz``."""
    def compute(out: Path):
        spec = fisher_spec(ctx)
        model = ctx.model()
        layers = ctx.prunable_layers(model)
        frames = calibrate.load_frames(calib)
        ds = ctx.dataset(frames["split"])
        calib_batches = list(batches(model, ds, frames["calib"]))
        orders = intra_layer_orders(model, layers, calib_batches, spec)
        total = len(calib_batches) * spec.probes_per_frame
        if effective_perturbation(ctx) == "reconstructed":
            ids = recover.reconstruction_frames(ctx, frames)
            recon = recover.reconstruction_spec(ctx)
            with progress_bar(total + len(layers), "sensitivity (fisher, reconstructed)", ctx.conf.progress) as bar:
                try:
                    curves = reconstructed_fisher_curves(
                        model, layers, calib_batches, spec, orders, calib_batches[:len(ids)], recon,
                        ctx.conf.sensitivity.coarse_levels, progress=bar.advance)
                except ReconstructionError as e:
                    raise recover.too_few_samples(ctx, len(ids), e) from None
        elif effective_method(ctx) == "fisher":
            with progress_bar(total, "sensitivity (fisher)", ctx.conf.progress) as bar:
                curves = fisher_curves(model, layers, calib_batches, spec, orders, progress=bar.advance)
        else:
            curves = measured_layer_curves(model, layers, calib_batches, spec, orders)
        np.savez(out / "curves.npz", **curves)
        np.savez(out / "orders.npz", **{n: o.to(torch.int32).cpu().numpy() for n, o in orders.items()})
        return {"num_levels": spec.num_levels, "layers": list(layers), "perturbation": effective_perturbation(ctx)}

    return ctx.cache.get_or_compute("sensitivity", cache_inputs(ctx, calib), compute)


def load(entry: CacheEntry) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """(curves, orders) in the layer order recorded at compute time."""
    names = entry.meta()["layers"]
    with np.load(entry.path / "curves.npz") as c, np.load(entry.path / "orders.npz") as o:
        return ({n: c[n] for n in names}, {n: torch.from_numpy(o[n].astype(np.int64)) for n in names})
