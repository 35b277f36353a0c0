"""Issue 10 §4: what limits finetune-free recovery — which outputs and which layers — for one run.

Usage: python bench/recovery_limits.py [--top 1,3,5] [-- Hydra overrides]   (default: the `make run` config,
CenterPoint-voxel, DM3D default, flops_target 0.25, recovery=reconstruct)

1. The run itself (`dm3d` stages through the shared cache: dense and pruned mAP with their bootstrap).
2. Which outputs: the recovered model evaluated with one of its head outputs (heatmap, reg, height, dim,
   rot, each for every task) replaced by the dense model's on the same frame, and with every localisation
   output replaced at once. The mAP such a hybrid gets back says what that output's error costs.
3. Which layers: each pruned layer restored alone to its dense weights in the recovered model, the
   measured D (METHOD §2, the held-out distortion frames) of that model; then the top 1/3/5 layers by D
   restored together and evaluated (mAP, paired interval vs the recovered model, achieved reduction).
Results: bench/results/recovery_limits_<detector>.json and .md, with the machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _compose import compose

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


class HybridHead:
    """Forward hooks that replace some of a CenterHead's outputs by the dense model's on the same batch."""

    def __init__(self, dense, model, keys):
        from dm3d_exp.adapters.heads import head_outputs

        if not hasattr(getattr(model, "pts_bbox_head", None), "task_heads"):
            raise SystemExit("recovery_limits: the output swap is written for CenterHead detectors")
        self.keys, self.saved = set(keys), None

        def grab(mod, inputs, output):
            data_samples = output["data_samples"]
            self.saved = head_outputs(dense, output["inputs"], data_samples)

        def swap(mod, inputs, output):
            for task, task_out in enumerate(output):
                for key in task_out[0]:
                    if key in self.keys:
                        task_out[0][key] = self.saved[f"task{task}.{key}"]
            return output

        self.handles = [model.data_preprocessor.register_forward_hook(grab),
                        model.pts_bbox_head.register_forward_hook(swap)]

    def remove(self):
        for h in self.handles:
            h.remove()


def evaluate_model(ctx, model, label):
    """mAP and its bootstrap resamples of ``model`` on the run's evaluation frames (not cached)."""
    from dm3d_exp.adapters.evaluation import build_metric, evaluate_detector, headline_map
    from dm3d_exp.stages.context import seeded_indices

    conf = ctx.conf.eval
    ds = ctx.dataset(conf.split)
    indices = seeded_indices(len(ds), conf.num_frames, 0, "eval.num_frames")
    metric = build_metric(ctx.mmdet3d_cfg, ctx.data_root, ctx.conf.dataset.format, conf.split,
                          ctx.conf.dataset.classes, conf.bootstrap)
    start = time.perf_counter()
    raw, _ = evaluate_detector(model, ds, indices, metric, conf.batch_size, max_detections=conf.max_detections)
    metrics = {k.split("/", 1)[-1]: float(v) for k, v in raw.items()}
    print(f"  {label}: mAP {headline_map(metrics):.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return headline_map(metrics), np.asarray(metric.bootstrap_values), metrics


def cell(map_value, boot, ref_boot):
    from dm3d_exp.kitti.bootstrap import paired_interval

    low, high = paired_interval(boot, ref_boot)
    return {"mAP": map_value, "delta_vs_recovered": float(np.mean(boot - ref_boot)), "delta_ci": [low, high]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--top", default="1,3,5", help="restore the top-k layers by D together (comma list)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    from dm3d_exp.adapters.checkpoint import save_checkpoint
    from dm3d_exp.adapters.data import batches
    from dm3d_exp.adapters.layers import weight_view
    from dm3d_exp.adapters.sensitivity import DistortionMeter
    from dm3d_exp.pipeline.run import run_stages
    from dm3d_exp.stages import allocate, evaluate
    from dm3d_exp.stages.context import RunContext
    from dm3d_exp.stages.sensitivity import fisher_spec

    conf = compose(args.overrides)
    torch.set_num_threads(conf.threads)
    print("run (cached stages):", flush=True)
    summary, entries, _ = run_stages(conf)
    ctx = RunContext(conf)
    ckpt = str(entries["recover"].path / "recovered.pth")
    dense_eval = evaluate.load(entries["evaluate_dense"])
    pruned_eval = evaluate.load(entries["evaluate"])
    ref_boot = np.asarray(pruned_eval["bootstrap"]["mAP"])
    dense_boot = np.asarray(dense_eval["bootstrap"]["mAP"])
    out: dict = {"config": args.overrides, "machine": {"cpu": platform.processor() or platform.machine(),
                                                       "threads": conf.threads, "python": platform.python_version()},
                 "dense_mAP": dense_eval["eval"]["mAP"], "recovered_mAP": pruned_eval["eval"]["mAP"],
                 "reduction": summary["pruned/cost/flops_reduction"], "frames": pruned_eval["frames"]}
    print(f"dense {out['dense_mAP']:.2f}, recovered {out['recovered_mAP']:.2f} at {out['reduction']:.2f}x", flush=True)

    dense = ctx.model()
    recovered = ctx.model(ckpt)
    print("which outputs (recovered model, one output taken from the dense model):", flush=True)
    keys = sorted({k.split(".", 1)[1] for k in _head_keys(dense, ctx)})
    swaps = {f"dense {k}": [k] for k in keys}
    swaps["dense localisation (all but heatmap)"] = [k for k in keys if k != "heatmap"]
    out["outputs"] = {}
    for label, swap in swaps.items():
        hook = HybridHead(dense, recovered, swap)
        try:
            value, boot, _ = evaluate_model(ctx, recovered, label)
        finally:
            hook.remove()
        out["outputs"][label] = cell(value, boot, ref_boot)

    print("which layers (each pruned layer restored alone to its dense weights):", flush=True)
    plan = allocate.load(entries["allocate"])
    calib = entries["calibrate"]
    ds = ctx.dataset(conf.eval.split)
    frames = evaluate.held_out_frames(ctx, calib, len(ds))
    meter = DistortionMeter(dense, list(batches(dense, ds, frames)), fisher_spec(ctx).distortion)
    layers, dense_layers = ctx.prunable_layers(recovered), ctx.prunable_layers(dense)
    pruned = [n for n, rec in plan["layers"].items() if rec["pruned"] > 0]
    base_d = meter(recovered)
    rows = []
    for name in pruned:
        view = weight_view(layers[name])
        saved = view.detach().clone()
        with torch.no_grad():
            view.copy_(weight_view(dense_layers[name]))
        d = meter(recovered)
        with torch.no_grad():
            view.copy_(saved)
        rec = plan["layers"][name]
        rows.append({"layer": name, "sparsity": rec["sparsity"], "D_restored": d, "D_drop": base_d - d,
                     "macs_added": rec["macs_dense"] - rec["macs_pruned"]})
    rows.sort(key=lambda r: -r["D_drop"])
    out["D_recovered"], out["layers"] = base_d, rows
    for r in rows[:8]:
        print(f"  {r['layer']}: sparsity {r['sparsity']:.2f}, D {base_d:.3f} -> {r['D_restored']:.3f}", flush=True)

    macs_dense = plan["macs"]["macs_dense_whole"]
    macs_pruned = plan["macs"]["macs_pruned_whole"]
    out["restored"] = {}
    with tempfile.TemporaryDirectory(prefix="dm3d-limits-") as tmp:
        for k in [int(x) for x in args.top.split(",")]:
            model = ctx.model(ckpt)
            top = [r["layer"] for r in rows[:k]]
            with torch.no_grad():
                for name in top:
                    weight_view(ctx.prunable_layers(model)[name]).copy_(weight_view(dense_layers[name]))
            path = save_checkpoint(model, Path(tmp) / f"top{k}.pth")
            entry = evaluate.run(ctx, str(path), calib, f"top {k} restored")
            result = evaluate.load(entry)
            boot = np.asarray(result["bootstrap"]["mAP"])
            added = sum(r["macs_added"] for r in rows[:k])
            row = cell(result["eval"]["mAP"], boot, ref_boot)
            row.update(layers=top, reduction=macs_dense / (macs_pruned + added),
                       gap_to_dense=float(np.mean(dense_boot - boot)))
            out["restored"][f"top {k}"] = row
            print(f"  top {k} restored: mAP {row['mAP']:.2f} at {row['reduction']:.2f}x", flush=True)

    name = conf.detector.name
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"recovery_limits_{name}.json").write_text(json.dumps(out, indent=1))
    (RESULTS / f"recovery_limits_{name}.md").write_text(_markdown(out))
    print(f"wrote bench/results/recovery_limits_{name}.json/.md")
    return 0


def _head_keys(dense, ctx):
    from dm3d_exp.adapters.data import batches
    from dm3d_exp.adapters.heads import head_outputs

    ds = ctx.dataset(ctx.conf.eval.split)
    inputs, samples = next(iter(batches(dense, ds, [0])))
    with torch.no_grad():
        return list(head_outputs(dense, inputs, samples))


def _markdown(out: dict) -> str:
    ci = lambda c: f"{c['delta_vs_recovered']:+.1f} ({c['delta_ci'][0]:+.1f} to {c['delta_ci'][1]:+.1f})"  # noqa: E731
    lines = [f"# What limits recovery: `{' '.join(out['config']) or 'make run defaults'}`", "",
             f"Dense {out['dense_mAP']:.1f} mAP, recovered {out['recovered_mAP']:.1f} mAP at {out['reduction']:.2f}x "
             f"({out['frames']} eval frames; machine {out['machine']}). Paired 95 % frame-bootstrap intervals.", "",
             "## Which outputs (recovered model, the named outputs taken from the dense model)", "",
             "| swap | mAP | vs recovered |", "|---|---|---|"]
    lines += [f"| {k} | {c['mAP']:.1f} | {ci(c)} |" for k, c in out["outputs"].items()]
    lines += ["", f"## Which layers (measured D of the recovered model {out['D_recovered']:.3f}; one layer "
              "restored to dense)", "", "| layer | sparsity | D restored | MMACs added |", "|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['sparsity']:.2f} | {r['D_restored']:.3f} | {r['macs_added'] / 1e6:.0f} |"
              for r in out["layers"][:12]]
    lines += ["", "| restored together | reduction | mAP | vs recovered | gap to dense |", "|---|---|---|---|---|"]
    lines += [f"| {k}: {', '.join(c['layers'])} | {c['reduction']:.2f}x | {c['mAP']:.1f} | {ci(c)} | "
              f"{c['gap_to_dense']:.1f} |" for k, c in out["restored"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
