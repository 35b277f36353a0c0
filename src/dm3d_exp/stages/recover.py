"""Stage 4b — recover (METHOD.md §11; beyond the paper): re-fit the kept weights of the pruned model and
re-estimate its normalisation statistics, finetune-free. Same masks, same FLOPs as the prune stage.

reconstruct: sequential fixed-mask reconstruction of every prunable layer on the calibration frames
(:mod:`dm3d_exp.adapters.reconstruct`); statistics=bn_reestimate: BN running statistics re-estimated
through the training pipeline; statistics=statcorr: BN running statistics set so that the pruned model's
BN outputs match the dense model's on the reconstruction's calibration frames
(:mod:`dm3d_exp.adapters.batchnorm`).
Artifacts: ``recovered.pth`` (mmdet3d-loadable), ``recovery.json`` (per-layer record: status,
samples, relative calibration error zeroed vs reconstructed) and, for statcorr, ``statcorr.json`` (per BN:
channels, channels matched by mean only, standardised input shift before correction).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..adapters import batchnorm, reconstruct as recon_mod
from ..adapters.checkpoint import save_checkpoint
from ..adapters.data import batches, build_train_dataset, train_batches
from ..adapters.layers import weight_view
from ..core.reconstruct import ReconstructionError
from ..errors import InputError
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from ..progress import progress_bar
from . import calibrate
from .context import RunContext, seeded_indices

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def load_masks(pruned: CacheEntry, layers) -> dict[str, torch.Tensor]:
    """The prune stage's masks (canonical-view bool, True = kept) of ``layers``."""
    with np.load(pruned.path / "masks.npz") as z:
        masks = {}
        for name, m in layers.items():
            shape = weight_view(m).shape
            bits = np.unpackbits(z[name])[: int(np.prod(shape))]
            masks[name] = torch.from_numpy(bits.reshape(shape).astype(bool))
    return masks


def reconstruction_spec(ctx: RunContext) -> recon_mod.ReconstructionSpec:
    """The ``recovery`` section's reconstruction settings."""
    r = ctx.conf.recovery
    return recon_mod.ReconstructionSpec(target=r.target, damping=r.damping, max_sites=r.max_sites,
                                        layers_per_pass=r.layers_per_pass, seed=ctx.conf.seed)


def reconstruction_frames(ctx: RunContext, frames: dict) -> list[int]:
    """The calibration frames reconstruction uses: the first ``recovery.num_frames`` (default: all)."""
    r = ctx.conf.recovery
    return frames["calib"][: r.num_frames] if r.num_frames else frames["calib"]


def too_few_samples(ctx: RunContext, n_frames: int, e: ReconstructionError) -> InputError:
    """The one-line error for statistics of fewer samples than a layer has inputs."""
    r = ctx.conf.recovery
    return InputError(f"recovery.num_frames={r.num_frames or n_frames}, recovery.max_sites={r.max_sites}: "
                      f"{e}: use more calibration frames or sites")


def _reconstruct(ctx: RunContext, model, layers, masks, calib_batches, dense) -> dict:
    dense_layers = ctx.prunable_layers(dense) if ctx.conf.recovery.target == "dense_outputs" else None
    with progress_bar(len(masks), "recover (reconstruct)", ctx.conf.progress) as bar:
        try:
            return recon_mod.reconstruct_model(model, layers, masks, calib_batches, reconstruction_spec(ctx),
                                               dense if dense_layers is not None else None, dense_layers, progress=bar.advance)
        except ReconstructionError as e:
            raise too_few_samples(ctx, len(calib_batches), e) from None


def _bn_reestimate(ctx: RunContext, model) -> int:
    r = ctx.conf.recovery
    ds = build_train_dataset(ctx.mmdet3d_cfg, ctx.data_root, ctx.conf.dataset.format)
    ids = seeded_indices(len(ds), r.bn_frames, ctx.conf.seed + 2, "recovery.bn_frames")
    size = r.bn_batch_size or int(ctx.mmdet3d_cfg.train_dataloader.batch_size)
    with progress_bar(-(-len(ids) // size), "recover (BN re-estimation)", ctx.conf.progress) as bar:
        return batchnorm.reestimate_batchnorm(model, train_batches(model, ds, ids, size, ctx.conf.seed),
                                              progress=bar.advance)


def _statcorr(ctx: RunContext, model, calib_batches, dense) -> dict:
    n_bns = len(batchnorm.batchnorm_modules(model))
    with progress_bar(n_bns, "recover (statcorr)", ctx.conf.progress) as bar:
        return batchnorm.correct_statistics(model, dense, calib_batches, progress=bar.advance)


def cache_inputs(ctx: RunContext, pruned: CacheEntry, calib: CacheEntry) -> dict:
    """Key of the recovery: the prune and calibrate keys, the recovery section, seed, code."""
    return {"prune": pruned.key, "calibrate": calib.key, "recovery": ctx.section("recovery"),
            "seed": ctx.conf.seed, "code": CODE}


def run(ctx: RunContext, pruned: CacheEntry, calib: CacheEntry) -> CacheEntry:
    """Reconstruct the kept weights and/or correct the BN statistics of the pruned model with the same
    masks (module docstring): artifacts ``recovered.pth``, ``recovery.json`` (and ``statcorr.json``)."""
    def compute(out: Path):
        r = ctx.conf.recovery
        model = ctx.model()  # dense weights: reconstruction zeroes and re-fits them layer by layer
        layers = ctx.prunable_layers(model)
        masks = load_masks(pruned, layers)
        meta: dict = {}
        records: dict = {}
        frames = calibrate.load_frames(calib)
        start = time.perf_counter()
        calib_batches = dense = None
        if r.method == "reconstruct" or r.statistics == "statcorr":  # one set of batches, one dense copy
            ids = reconstruction_frames(ctx, frames)
            calib_batches = list(batches(model, ctx.dataset(frames["split"]), ids))
            if r.target == "dense_outputs" or r.statistics == "statcorr":
                dense = ctx.model()
        if r.method == "reconstruct":
            records = _reconstruct(ctx, model, layers, masks, calib_batches, dense)
        else:
            with torch.no_grad():
                for name, m in layers.items():
                    weight_view(m).mul_(masks[name].to(m.weight.device))
        meta["seconds_reconstruct"] = time.perf_counter() - start
        start = time.perf_counter()
        if r.statistics == "bn_reestimate":
            meta["bn_batches"] = _bn_reestimate(ctx, model)
        elif r.statistics == "statcorr":
            corrected = _statcorr(ctx, model, calib_batches, dense)
            (out / "statcorr.json").write_text(json.dumps(corrected, indent=1))
            meta["statcorr_bns"] = len(corrected)
            meta["statcorr_shift_before_mean"] = float(np.mean([c["shift_before"] for c in corrected.values()])) \
                if corrected else 0.0
        meta["seconds_statistics"] = time.perf_counter() - start
        for name, m in layers.items():  # the masks survive recovery exactly
            if bool((weight_view(m).detach().cpu() != 0)[~masks[name]].any()):
                raise RuntimeError(f"recovery wrote a non-zero weight outside the mask of {name}")
        save_checkpoint(model, out / "recovered.pth", meta={"dm3d": {"prune_key": pruned.key, "recovery": ctx.section("recovery")}})
        (out / "recovery.json").write_text(json.dumps(records, indent=1))
        meta.update(summarise(records))
        return meta

    return ctx.cache.get_or_compute("recover", cache_inputs(ctx, pruned, calib), compute)


def summarise(records: dict[str, dict]) -> dict:
    """Layer counts by status and the mean relative calibration error zeroed vs reconstructed."""
    out: dict = {"layers": len(records)}
    for rec in records.values():
        out[f"layers_{rec['status']}"] = out.get(f"layers_{rec['status']}", 0) + 1
    solved = [rec for rec in records.values() if "error_zeroed" in rec]
    if solved:
        out["error_zeroed_mean"] = float(np.mean([rec["error_zeroed"] for rec in solved]))
        out["error_reconstructed_mean"] = float(np.mean([rec["error_reconstructed"] for rec in solved]))
    return out
