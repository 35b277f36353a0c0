"""Issue 10 §4 study: methods x FLOPs targets x recovery variants on a shipped detector, all val frames.

Usage: python bench/recovery_study.py [--detector centerpoint_voxel_synth] [--jobs 2] [--stage all]
           [--targets 0.5,0.33,0.25,0.2] [--only LABEL,...] [--tag NAME -- extra Hydra overrides]
(``--tag`` names a variant of the selected cells run with the extra overrides, e.g. another damping.)
Each cell is one real ``dm3d`` run (threads=1, its own run dir under bench/results/recovery_runs/, the user
stage cache shared, so the dense evaluation, calibration and sensitivity are computed once). Cells whose
summary.json exists are not rerun. ``--stage recover`` only fills the cache up to the recover stage.
Results: bench/results/recovery_<detector>.json (one row per cell, with the machine) and .md (table).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

METHODS = {  # label -> overrides
    "dm3d (paper D)": ["pruning=dm3d", "sensitivity=fisher"],
    "dm3d (fgnorm)": ["pruning=dm3d", "sensitivity=fisher_fgnorm"],
    "lamp": ["pruning=lamp"],
    "global_magnitude": ["pruning=global_magnitude"],
    "uniform": ["pruning=uniform"],
    "erk": ["pruning=erk"],
}
RECOVERY = {  # label -> (overrides, methods it applies to: None = all)
    "none": (["recovery=none"], None),
    "reconstruct": (["recovery=reconstruct", "sensitivity.perturbation=zeroed"], None),  # curves of zeroed weights
    "reconstruct + aware curves": (["recovery=reconstruct", "sensitivity.perturbation=reconstructed"],
                                   ("dm3d (paper D)", "dm3d (fgnorm)")),
}
COMMON = ["threads=1", "tracking=off", "progress=false", "eval.num_frames=null", "recovery.num_frames=8"]


def cells(targets, only, tag=""):
    for target in targets:
        for method, m_over in METHODS.items():
            for recovery, (r_over, applies) in RECOVERY.items():
                if applies is not None and method not in applies:
                    continue
                label = f"{method} | {recovery}{f' [{tag}]' if tag else ''} | {target}"
                if only and not any(o in label for o in only):
                    continue
                yield label, [*m_over, *r_over, f"pruning.flops_target={target}"]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label)


def run_cell(detector: str, label: str, overrides: list[str], stage: str, extra: list[str]) -> dict | None:
    run_dir = RESULTS / "recovery_runs" / detector / _slug(label)
    summary = run_dir / "summary.json"
    if stage == "all" and summary.exists():
        return json.loads(summary.read_text())
    cmd = [str(REPO / ".venv" / "bin" / "dm3d"), f"detector={detector}", *COMMON, *overrides, f"stage={stage}",
           f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    (run_dir / "log.txt").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.txt").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        print(f"FAILED ({proc.returncode}) {label}: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(summary.read_text()) if summary.exists() else None


def row(label: str, s: dict) -> dict:
    method, recovery, target = label.split(" | ")
    out = {"method": method, "recovery": recovery, "flops_target": float(target)}
    keys = {"mAP": "pruned/eval/mAP", "Car": "pruned/eval/Car/3d/moderate/R40",
            "Pedestrian": "pruned/eval/Pedestrian/3d/moderate/R40", "Cyclist": "pruned/eval/Cyclist/3d/moderate/R40",
            "mAP_ci_low": "pruned/eval/mAP_ci_low", "mAP_ci_high": "pruned/eval/mAP_ci_high",
            "dense_mAP": "dense/eval/mAP", "reduction": "pruned/cost/flops_reduction",
            "D_predicted": "distortion/predicted", "D_measured": "distortion/measured"}
    out.update({k: s.get(v) for k, v in keys.items()})
    out["time_s"] = {k[5:-2]: round(v, 1) for k, v in s.items() if k.startswith("time/")}
    out["metrics_json"] = str(Path(s["artifacts"]["evaluate"]["path"]) / "metrics.json")
    return out


def _bootstrap(r: dict, detector: str):
    """The row's per-resample mAPs (from its metrics.json, found through its run dir if not recorded)."""
    try:
        path = r.get("metrics_json")
        if path is None:
            label = f"{r['method']} | {r['recovery']} | {r['flops_target']}"
            s = json.loads((RESULTS / "recovery_runs" / detector / _slug(label) / "summary.json").read_text())
            path = str(Path(s["artifacts"]["evaluate"]["path"]) / "metrics.json")
        return json.loads(Path(path).read_text())["bootstrap"]["mAP"]
    except (KeyError, OSError, ValueError):
        return None


def paired_lines(rows: list[dict], detector: str) -> list[str]:
    """Best DM3D row vs best baseline row per target and recovery family, with the paired bootstrap
    interval of the difference (same frames, same resamples)."""
    import numpy as np

    from dm3d_exp.kitti.bootstrap import paired_interval

    lines = ["", "Paired differences (same frames and resamples; 95 % interval of mAP(DM3D) - mAP(baseline)):", "",
             "| target | recovery | best DM3D | best baseline | difference | 95% interval |", "|---|---|---|---|---|---|"]

    def family(r):  # aware curves are DM3D's way of using the same reconstruction; other [tags] are variants
        base = "reconstruct" if r["recovery"].startswith("reconstruct") else "none"
        tag = r["recovery"].split("[", 1)[1].rstrip("]") if "[" in r["recovery"] else ""
        return {"": base, "statcorr": f"{base} + statcorr", "BN": f"{base} + BN"}.get(tag)

    families = ("none", "none + statcorr", "reconstruct", "reconstruct + statcorr", "reconstruct + BN", "any")
    for target in sorted({r["flops_target"] for r in rows}, reverse=True):
        for fam in families:
            cand = [r for r in rows if r["flops_target"] == target and r["mAP"] is not None
                    and (family(r) == fam or (fam == "any" and family(r) is not None))]
            dm3d = [r for r in cand if r["method"].startswith("dm3d")]
            base = [r for r in cand if not r["method"].startswith("dm3d")]
            if not dm3d or not base:
                continue
            a, b = max(dm3d, key=lambda r: r["mAP"]), max(base, key=lambda r: r["mAP"])
            va, vb = _bootstrap(a, detector), _bootstrap(b, detector)
            ci = "" if va is None or vb is None else "{:.1f} to {:.1f}".format(*paired_interval(np.array(va),
                                                                                                np.array(vb)))
            lines.append(f"| {target} | {fam} | {a['method']} ({a['recovery']}) {a['mAP']:.2f} | "
                         f"{b['method']} ({b['recovery']}) {b['mAP']:.2f} | {a['mAP'] - b['mAP']:+.2f} | {ci} |")
    return lines


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import numpy as np
    import pandas as pd

    return float(np.corrcoef(pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy())[0, 1])


def rank_lines(rows: list[dict]) -> list[str]:
    """Does D rank allocations? Spearman(measured D, mAP) over every cell that measures the default
    (extended, fgnorm) distortion — all but the paper-D cells — per target and pooled; and Spearman(predicted D,
    mAP) over the DM3D cells of that distortion. Negative = lower D, higher mAP."""
    cells = [r for r in rows if r["method"] != "dm3d (paper D)" and r["mAP"] is not None and r["flops_target"] < 1]
    lines = ["", "Does D rank allocations? Spearman rank correlation with mAP (negative: lower D, higher mAP; "
             "cells of the default distortion, i.e. all but paper D):", "",
             "| target | cells | measured D vs mAP | DM3D cells | predicted D vs mAP |", "|---|---|---|---|---|"]
    for target in [*sorted({r["flops_target"] for r in cells}, reverse=True), "all"]:
        sub = [r for r in cells if target == "all" or r["flops_target"] == target]
        meas = [r for r in sub if r["D_measured"] is not None]
        pred = [r for r in sub if r["D_predicted"] is not None and r["method"].startswith("dm3d")]
        rho = lambda rs, key: f"{spearman([r[key] for r in rs], [r['mAP'] for r in rs]):+.2f}" if len(rs) > 2 else ""  # noqa: E731
        lines.append(f"| {target} | {len(meas)} | {rho(meas, 'D_measured')} | {len(pred)} | {rho(pred, 'D_predicted')} |")
    return lines


def _fmt(v, nd=2):
    return "" if v is None else f"{v:.{nd}f}"


def markdown(rows: list[dict], detector: str, machine: dict) -> str:
    lines = [f"# Recovery study: {detector} (all val frames; {machine.get('cpu')}, threads=1)", "",
             "| target | method | recovery | mAP | 95% CI | Car | Ped | Cyc | reduction | D pred | D meas | s (sens / recover / eval) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["flops_target"], r["method"], r["recovery"])):
        ci = f"{_fmt(r['mAP_ci_low'], 1)}-{_fmt(r['mAP_ci_high'], 1)}" if r["mAP_ci_low"] is not None else ""
        t = r["time_s"]
        lines.append(f"| {r['flops_target']} | {r['method']} | {r['recovery']} | {_fmt(r['mAP'])} | {ci} | "
                     f"{_fmt(r['Car'], 1)} | {_fmt(r['Pedestrian'], 1)} | {_fmt(r['Cyclist'], 1)} | "
                     f"{_fmt(r['reduction'])}x | {_fmt(r['D_predicted'], 3)} | {_fmt(r['D_measured'], 3)} | "
                     f"{t.get('sensitivity', 0):.0f} / {t.get('recover', 0):.0f} / {t.get('evaluate', 0):.0f} |")
    dense = next((r["dense_mAP"] for r in rows if r["dense_mAP"] is not None), None)
    lines += ["", f"dense mAP: {_fmt(dense)}"] + paired_lines(rows, detector) + rank_lines(rows)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", default="centerpoint_voxel_synth")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--stage", default="all", choices=["recover", "all"])
    p.add_argument("--targets", default="0.5,0.25,0.33,0.2")
    p.add_argument("--only", default="")
    p.add_argument("--tag", default="")
    p.add_argument("--report", action="store_true", help="only re-render the .md from the .json")
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from dm3d_exp.training.recipe import machine

    if a.report:
        out = RESULTS / f"recovery_{a.detector}.json"
        doc = json.loads(out.read_text())
        _write(out.with_suffix(".md"), markdown(doc["rows"], a.detector, doc["machine"]))
        return 0
    if extra and not a.tag:
        p.error("extra overrides need --tag (the variant's name in the table)")
    todo = list(cells([t.strip() for t in a.targets.split(",")], [o for o in a.only.split(",") if o], a.tag))
    out = RESULTS / f"recovery_{a.detector}.json"
    from filelock import FileLock

    with cf.ThreadPoolExecutor(a.jobs) as pool:
        futures = {pool.submit(run_cell, a.detector, label, over, a.stage, extra): label for label, over in todo}
        for fut in cf.as_completed(futures):
            label = futures[fut]
            s = fut.result()
            print(f"done {label}: {None if not s else s.get('pruned/eval/mAP')}", flush=True)
            if a.stage == "all" and s and "pruned/eval/mAP" in s:
                r = row(label, s)
                if extra:
                    r["overrides"] = extra
                with FileLock(str(out) + ".lock"):  # several studies may add rows at once: read, merge, write
                    rows = {}
                    if out.exists():
                        rows = {(x["method"], x["recovery"], x["flops_target"]): x
                                for x in json.loads(out.read_text())["rows"]}
                    rows[(r["method"], r["recovery"], r["flops_target"])] = r
                    doc = {"detector": a.detector, "machine": machine(), "common_overrides": COMMON,
                           "rows": list(rows.values())}
                    _write(out, json.dumps(doc, indent=1))  # after every cell: a partial study is still readable
                    _write(out.with_suffix(".md"), markdown(doc["rows"], a.detector, doc["machine"]))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
