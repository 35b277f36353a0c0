"""Uniform magnitude pruning of a shipped reference detector: the accuracy cost that DM3D must beat.

Every prunable layer (Conv/ConvTranspose/Linear and spconv SubMConv3d/SparseConv3d weights, as
``dm3d_exp.adapters.layers.prunable_modules`` lists them) is pruned to the same sparsity (default 75 %)
by weight magnitude with ``torch.nn.utils.prune.l1_unstructured``, without fine-tuning, and the detector
is scored before and after on the synthetic val split (DevkitKittiMetric: mAP = mean moderate 3D AP R40
of Car/Pedestrian/Cyclist). Target: the drop is at least 5 mAP (else the benchmark is too easy to show
differences between allocation methods). Writes bench/results/uniform_prune_<detector>.json (temp file,
then atomic rename) with dense/pruned metrics, the drop and its ratio to the 5-mAP target. Exits 0 with
a note (and writes nothing) where the detector has no shipped checkpoint or was trained on data of
another generator version.

    python bench/bench_uniform_prune.py [--detector pointpillars_synth] [--sparsity 0.75] [--frames N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.nn.utils import prune

from dm3d_exp.adapters.layers import prunable_modules
from dm3d_exp.errors import InputError
from dm3d_exp.fileio import atomic_write_bytes
from dm3d_exp.adapters.detector import build_detector
from dm3d_exp.training import evaluate, load_config, resolve_detector
from dm3d_exp.training.recipe import MANIFEST_FILE, headline, set_threads

TARGET_DROP = 5.0
ROOT = Path(__file__).resolve().parents[1]


def uniform_magnitude_prune(model: torch.nn.Module, sparsity: float) -> dict:
    """Prune every prunable layer's weight to ``sparsity`` by magnitude; bake the masks; return counts."""
    layers = list(prunable_modules(model))
    for _, module in layers:
        prune.l1_unstructured(module, "weight", amount=sparsity)
        prune.remove(module, "weight")
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    kinds: dict[str, int] = {}
    for _, m in layers:
        kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
    return {"layers": len(layers), "layer_types": kinds, "weights": total, "zeros": zeros,
            "achieved_sparsity": zeros / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="pointpillars_synth")
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--frames", type=int, default=None, help="first N val frames (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    set_threads(args.threads)
    try:
        spec = resolve_detector(args.detector)
    except InputError as e:
        print(f"{e}; nothing measured")
        return
    from dm3d_exp.data import GENERATOR_VERSION, SynthParams, ensure_dataset

    manifest = json.loads((spec.checkpoint.parent / MANIFEST_FILE).read_text())
    if manifest["data"]["generator_version"] != GENERATOR_VERSION:
        print(f"{spec.name} was trained on synthetic data of generator version "
              f"{manifest['data']['generator_version']}, the installed generator is version {GENERATOR_VERSION}: "
              f"retrain it (make train-reference DETECTOR={spec.name}); nothing measured")
        return
    data_root = ensure_dataset(SynthParams.from_dict(manifest["data"]["params"]))
    cfg = load_config(spec.config, data_root)
    model = build_detector(cfg, spec.checkpoint)

    start = time.perf_counter()
    dense = evaluate(model, cfg, args.frames)
    dense_s = time.perf_counter() - start
    counts = uniform_magnitude_prune(model, args.sparsity)
    start = time.perf_counter()
    pruned = evaluate(model, cfg, args.frames)
    pruned_s = time.perf_counter() - start

    d, p = headline(dense), headline(pruned)
    drop = d["mAP"] - p["mAP"]
    report = {
        "benchmark": "uniform_prune",
        "detector": spec.name,
        "checkpoint_sha256": manifest["checkpoint"]["sha256"],
        "data": manifest["data"],
        "frames": args.frames or manifest["data"]["params"]["num_val"],
        "sparsity": args.sparsity,
        **counts,
        "dense": d,
        "pruned": p,
        "map_drop": drop,
        "target_min_drop": TARGET_DROP,
        "ratio_to_target": drop / TARGET_DROP,
        "meets_target": drop >= TARGET_DROP,
        "eval_dense_s": dense_s,
        "eval_pruned_s": pruned_s,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(f"{spec.name}: dense mAP {d['mAP']:.2f}, uniform {args.sparsity:.0%} magnitude pruning of "
          f"{counts['layers']} layers -> {p['mAP']:.2f} (drop {drop:.2f}, {drop / TARGET_DROP:.2f} x the "
          f"{TARGET_DROP:.0f}-mAP target); eval {dense_s:.1f} s + {pruned_s:.1f} s")
    result = ROOT / "bench" / "results" / f"uniform_prune_{spec.name}.json"
    atomic_write_bytes(result, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {result}")


if __name__ == "__main__":
    main()
