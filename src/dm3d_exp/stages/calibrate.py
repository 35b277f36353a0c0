"""Stage 1 — calibrate: calibration frame ids and per-layer MACs from rulebook pairs (METHOD.md §7).

Artifacts: ``frames.json`` (calibration and MACs-reference frame indices of the calibration split) and
``layers.json`` (every viewable layer: kind, taps, Cout, Cin, mean per-frame pair counts n_j, dense MACs).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..adapters.data import batches
from ..adapters.heads import head_outputs
from ..adapters.layers import layer_spec
from ..adapters.macs_probe import PairRecorder
from ..core.macs import LayerCost
from ..store.cache import CacheEntry
from ..store.code_version import code_version
from .context import RunContext, seeded_indices

CODE = code_version(sys.modules[__name__])  # this module and everything it imports


def cache_inputs(ctx: RunContext) -> dict:
    """Key of the calibration: detector, dataset, calib section, numerics, code."""
    return {"detector": ctx.detector_identity, "dataset": ctx.dataset_identity, "calib": ctx.section("calib"),
            "numerics": ctx.numerics_identity, "code": CODE}


def run(ctx: RunContext) -> CacheEntry:
    """Seeded calibration / reference frames and every prunable layer's rulebook pair counts on the reference
    frames (its MACs model): artifacts ``frames.json`` and ``layers.json``."""
    def compute(out: Path):
        conf = ctx.conf.calib
        ds = ctx.dataset(conf.split)
        frames = {"split": conf.split,
                  "calib": seeded_indices(len(ds), conf.num_frames, conf.seed, "calib.num_frames"),
                  "reference": seeded_indices(len(ds), conf.reference_frames, conf.seed + 1, "calib.reference_frames")}
        model = ctx.model()
        with PairRecorder(model) as rec:
            for inputs, samples in batches(model, ds, frames["reference"]):
                with torch.no_grad():
                    head_outputs(model, inputs, samples)
                rec.add_frames(len(samples))
        pairs = rec.mean_pairs()
        layers = {}
        for name, module in rec.modules.items():
            spec = layer_spec(module)
            cost = LayerCost(name, pairs[name], spec.cout, spec.cin, spec.kernel)
            layers[name] = {"kind": spec.kind, "taps": spec.taps, "cout": spec.cout, "cin": spec.cin,
                            "groups": spec.groups, "kernel": list(spec.kernel), "pairs": pairs[name].tolist(),
                            "dense_macs": cost.dense_macs}
        (out / "frames.json").write_text(json.dumps(frames))
        (out / "layers.json").write_text(json.dumps(layers))
        return {"num_layers": len(layers), "dense_macs": sum(v["dense_macs"] for v in layers.values())}

    return ctx.cache.get_or_compute("calibrate", cache_inputs(ctx), compute)


def load_costs(entry: CacheEntry) -> dict[str, LayerCost]:
    """LayerCost (pairs, Cout, Cin, kernel) of every viewable layer recorded by calibrate."""
    layers = json.loads((entry.path / "layers.json").read_text())
    return {n: LayerCost(n, np.asarray(v["pairs"]), v["cout"], v["cin"], tuple(v["kernel"])) for n, v in layers.items()}


def load_frames(entry: CacheEntry) -> dict:
    """{split, calib: frame indices, reference: frame indices} of a calibrate entry."""
    return json.loads((entry.path / "frames.json").read_text())
