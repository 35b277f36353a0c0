"""Issue 11 fault injection: hostile-but-fair scenarios against the real `dm3d` CLI on a tiny workspace.

Usage: python bench/fault_injection.py [--out bench/results/fault_injection.md] [--only SUBSTRING]
Prints (and writes) a table scenario | expected | observed | ok; exit 1 if any row is not ok.
Each scenario runs real processes (dm3d, dm3d-report) on a tiny synthetic dataset and a random-init tiny
PointPillars (tests/pipeline/tiny_workspace.py), with real MLflow sqlite stores; about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "pipeline"))
from tiny_workspace import DM3D, ENV, dm3d_command, make_workspace  # noqa: E402

REPORT = [sys.executable, "-c", "from dm3d_exp.cli import report_main; report_main()"]
SLOW_STAGE = ("pruning=dm3d", "sensitivity=measured", "sensitivity.measured_levels=40")
SCENARIOS = []


def scenario(name: str, expected: str):
    def register(fn):
        SCENARIOS.append((name, expected, fn))
        return fn

    return register


def _run(cmd, cwd, timeout=600, env=None):
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})
    return p.returncode, p.stdout, p.stderr, time.monotonic() - start


def _one_line(rc, err, *needles) -> tuple[bool, str]:
    """(ok, observed) for 'exit 2 with exactly one error: line containing every needle, no traceback'."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    text = lines[0] if lines else (err.strip().splitlines() or ["<no stderr>"])[-1]
    ok = rc == 2 and len(lines) == 1 and "Traceback" not in err and all(n in text for n in needles)
    return ok, f"exit {rc}, {len(lines)} error line(s): {text[:150]}"


def _all_one_line(tmp, cases) -> tuple[bool, str]:
    """Run each (command, needle) case: ok when every one is :func:`_one_line` with its needle."""
    results = []
    for cmd, needle in cases:
        rc, _, err, _ = _run(cmd, tmp)
        results.append(_one_line(rc, err, needle))
    return all(ok for ok, _ in results), " | ".join(obs for _, obs in results)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _malicious(path: Path, marker: Path, state) -> Path:
    torch.save({"meta": {"note": _Payload(marker)}, "state_dict": state}, path)
    return path


@scenario("malicious pickle as detector.checkpoint", "exit 2, one line naming detector.trust_checkpoint; no code runs")
def _(ws, tmp):
    marker = tmp / "marker_ckpt.txt"
    evil = _malicious(tmp / "evil.pth", marker, torch.load(ws[2], weights_only=True)["state_dict"])
    rc, _, err, _ = _run(dm3d_command(ws, f"detector.checkpoint={evil}", "tracking=off"), tmp)
    ok, obs = _one_line(rc, err, "detector.trust_checkpoint")
    return ok and not marker.exists(), f"{obs}; marker written: {marker.exists()}"


@scenario("malicious pickle planted as a cached pruned.pth", "exit 2 when a later job reads it; no code runs")
def _(ws, tmp):
    run = tmp / "plant"
    rc, _, err, _ = _run([*dm3d_command(ws, "pruning=uniform", "pruning.flops_target=0.5", "tracking=off"),
                          f"hydra.run.dir={run}"], tmp)
    pruned = Path(_summary(run)["artifacts"]["prune"]["path"]) / "pruned.pth"
    marker = tmp / "marker_cache.txt"
    _malicious(pruned, marker, torch.load(pruned, weights_only=True)["state_dict"])
    rc, _, err, _ = _run(dm3d_command(ws, "pruning=uniform", "pruning.flops_target=0.5", "tracking=off",
                                      "eval.bootstrap=7"), tmp)  # a new evaluation of the planted entry
    ok, obs = _one_line(rc, err, "pruned.pth")
    return ok and not marker.exists(), f"{obs}; marker written: {marker.exists()}"


@scenario("a module is edited (appended statement)",
          "exactly the stages importing it (transitively) get a new code version; a module no stage imports: none")
def _(ws, tmp):
    from dm3d_exp.store import code_version as cv

    stages = ("calibrate", "sensitivity", "allocate", "prune", "recover", "evaluate")
    copy = tmp / "pkg" / "dm3d_exp"
    shutil.copytree(cv.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: cv.digest(cv.closure(f"dm3d_exp.stages.{s}", copy), copy) for s in stages}
    rows = []
    ok = True
    for module, callers in (("adapters/heads/base.py", set(stages)),
                            ("core/statcorr.py", {"sensitivity", "allocate", "prune", "recover", "evaluate"}),
                            ("kitti/iou.py", {"evaluate"}), ("adapters/kitti_metric.py", {"evaluate"}),
                            ("pipeline/report.py", set()), ("plots.py", set())):
        path = copy / module
        original = path.read_text()
        path.write_text(original + "\n_FAULT_INJECTED = 1\n")
        changed = {s for s in stages if cv.digest(cv.closure(f"dm3d_exp.stages.{s}", copy), copy) != before[s]}
        path.write_text(original)
        ok &= changed == callers
        rows.append(f"{module}: {','.join(sorted(changed)) or 'none'}")
    return ok, "; ".join(rows)


@scenario("calibration-size ablation (uniform, calib.split=val)",
          "metrics re-used (evaluate cache hit); distortion frames disjoint from calibration")
def _(ws, tmp):
    obs, ok, seen = [], True, []
    for n in (1, 2):
        run = tmp / f"calib{n}"
        rc, _, err, _ = _run([*dm3d_command(ws, "pruning=uniform", "pruning.flops_target=0.5", "tracking=off",
                                            "calib.split=val", f"calib.num_frames={n}", "eval.distortion_frames=3",
                                            "cache_dir=" + str(tmp / "cache_ablation")), f"hydra.run.dir={run}"], tmp)
        s = _summary(run)
        calib = json.loads((Path(s["artifacts"]["calibrate"]["path"]) / "frames.json").read_text())["calib"]
        held = json.loads((Path(s["artifacts"]["distortion"]["path"]) / "meta.json").read_text())["frames"]
        ok &= not set(calib) & set(held)
        seen.append(s["cache/evaluate_hit"])
        obs.append(f"calib {calib} held-out {held}")
    ok &= seen == [0.0, 1.0]
    return ok, f"evaluate hit {seen}; " + "; ".join(obs)


@scenario("DP at the budget edge (60 integer-cost instances)", "never worse than brute force")
def _(ws, tmp):
    from dm3d_exp.core.allocate import dp_allocate

    rng = np.random.default_rng(11)
    worse = done = 0
    while done < 60:
        sizes = rng.integers(2, 7, int(rng.integers(2, 5)))
        curves = [rng.uniform(0, 10, n) for n in sizes]
        costs = [rng.integers(0, 11, n).astype(float) for n in sizes]
        budget = float(sum(c[rng.integers(c.size)] for c in costs))
        if budget <= 0:
            continue
        best = min(sum(d[k] for d, k in zip(curves, lv)) for lv in itertools.product(*(range(n) for n in sizes))
                   if sum(c[k] for c, k in zip(costs, lv)) <= budget)
        result = dp_allocate(curves, costs, budget)
        worse += result.distortion > best + 1e-9 or result.cost > budget
        done += 1
    return worse == 0, f"{worse} of {done} worse than brute force"


@scenario("tracking=server with nothing listening", "exit 2, one line, before any stage (no cache entry)")
def _(ws, tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp / "cache_dead_server"
    rc, _, err, sec = _run([*dm3d_command(ws, "tracking=server", f"tracking.uri=http://127.0.0.1:{port}"),
                            f"cache_dir={cache}"], tmp)
    ok, obs = _one_line(rc, err, "not healthy")
    entries = len(list(cache.rglob("meta.json"))) if cache.exists() else 0
    return ok and entries == 0, f"{obs}; {entries} cache entries; {sec:.0f} s"


def _start(ws, tmp, *overrides, db: Path | None = None):
    """Popen of `dm3d`; with ``db``, the store is created first (under the jobs' own lock) so that polling
    it never races the job's first-time migration."""
    if db is not None:
        from dm3d_exp.pipeline.tracking import ensure_store

        ensure_store(f"sqlite:///{db}")
    return subprocess.Popen(dm3d_command(ws, *overrides), cwd=tmp, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _live_run(proc, db: Path, timeout=300):
    from mlflow.tracking import MlflowClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.communicate()[1][-2000:])
        client = MlflowClient(f"sqlite:///{db}")
        for exp in client.search_experiments():
                for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
                    if r.data.tags.get("dm3d.role") == "job" and "time/calibrate_s" in r.data.metrics:
                        return client, r
        time.sleep(0.5)
    raise RuntimeError("no live run")


@scenario("SIGTERM during the sensitivity stage", "exit 143, no traceback, run KILLED with the stages done so far")
def _(ws, tmp):
    db = tmp / "term.db"
    proc = _start(ws, tmp, *SLOW_STAGE, f"tracking.db_path={db}", f"cache_dir={tmp / 'cache_term'}", db=db)
    client, run = _live_run(proc, db)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    status = client.get_run(run.info.run_id).info.status
    leftovers = [p.name for p in (tmp / "cache_term").rglob(".*") if p.is_dir()]
    ok = proc.returncode == 143 and "Traceback" not in err and status == "KILLED" and not leftovers
    return ok, f"exit {proc.returncode}, last line {err.strip().splitlines()[-1]!r}, run {status}, " \
               f"logged {sorted(k for k in run.data.metrics)}, temp dirs {leftovers}"


@scenario("kill -9 during the sensitivity stage, then another job and dm3d-report --repair",
          "the temp dir is removed by the next job that uses the stage; the RUNNING run is closed as KILLED")
def _(ws, tmp):
    db, cache = tmp / "kill.db", tmp / "cache_kill"
    proc = _start(ws, tmp, *SLOW_STAGE, f"tracking.db_path={db}", f"cache_dir={cache}", db=db)
    client, run = _live_run(proc, db)
    time.sleep(2)
    proc.kill()
    proc.wait(60)
    temp = [p for p in cache.rglob(".*") if p.is_dir()]
    rc, _, err, _ = _run([*dm3d_command(ws, "pruning=dm3d", "stage=sensitivity", "tracking=off"),
                          f"cache_dir={cache}"], tmp)
    after = [p for p in cache.rglob(".*") if p.is_dir()]
    status_before = client.get_run(run.info.run_id).info.status
    rc2, out, err2, _ = _run([*REPORT, "--tracking-uri", str(db), "--repair"], tmp)
    status = client.get_run(run.info.run_id).info.status
    ok = bool(temp) and not after and rc == 0 and status_before == "RUNNING" and rc2 == 0 and status == "KILLED"
    return ok, f"temp dirs after kill {len(temp)}, after next job {len(after)}; run {status_before} -> " \
               f"{status} ({out.strip()[:60]})"


@scenario("checkpoint of another architecture", "exit 2, one line naming missing/unexpected keys and the config")
def _(ws, tmp):
    other = REPO / "checkpoints" / "centerpoint_voxel_synth" / "model.pth"
    rc, _, err, _ = _run(dm3d_command(ws, f"detector.checkpoint={other}", "tracking=off"), tmp)
    return _one_line(rc, err, "does not fit", "keys")


@scenario("a text file as checkpoint", "exit 2, one line")
def _(ws, tmp):
    txt = tmp / "notes.pth"
    txt.write_text("not a checkpoint\n")
    rc, _, err, _ = _run(dm3d_command(ws, f"detector.checkpoint={txt}", "tracking=off"), tmp)
    return _one_line(rc, err, "not a readable torch file")


@scenario("calib.num_frames / eval.num_frames larger than the split", "exit 2, one line naming the key")
def _(ws, tmp):
    return _all_one_line(tmp, [(dm3d_command(ws, "pruning=uniform", f"{key}=50", "tracking=off"),
                                f"{key}=50 is larger than the split") for key in ("calib.num_frames", "eval.num_frames")])


@scenario("eval.distortion_frames larger than the split", "runs, with a warning saying how many frames it used")
def _(ws, tmp):
    rc, _, err, _ = _run(dm3d_command(ws, "pruning=uniform", "eval.distortion_frames=50", "tracking=off"), tmp,
                         env={"PYTHONWARNINGS": "default"})
    line = next((ln for ln in err.splitlines() if "eval.distortion_frames=50" in ln), "")
    return rc == 0 and "measuring the distortion on" in line, f"exit {rc}: {line.strip()[-140:]}"


@scenario("unknown config-group option / unparsable override / unknown key",
          "exit 2, one line (listing the options where there are some)")
def _(ws, tmp):
    return _all_one_line(tmp, [([*DM3D, arg], needle) for arg, needle in (
        ("pruning=magic", "expected one of"), ("pruning=[bad", "cannot parse"),
        ("pruning.nosuch=1", "Could not override 'pruning.nosuch'"))])


@scenario("bad values: flops_target=1.5, recovery.damping=0, recovery=magic",
          "exit 2, one line naming key, value and what is expected")
def _(ws, tmp):
    return _all_one_line(tmp, [(dm3d_command(ws, arg, "tracking=off"), needle) for arg, needle in (
        ("pruning.flops_target=1.5", "pruning.flops_target"), ("recovery.damping=0", "recovery.damping"),
        ("recovery=magic", "recovery='magic'"))])


@scenario("missing dataset root / missing checkpoint", "exit 2, one line naming the key")
def _(ws, tmp):
    return _all_one_line(tmp, [(dm3d_command(ws, arg, "tracking=off"), needle) for arg, needle in (
        (f"dataset.root={tmp / 'nowhere'}", "dataset.root"),
        (f"detector.checkpoint={tmp / 'missing.pth'}", "detector.checkpoint"))])


@scenario("baseline with DP-only keys (lamp + min_density / allocator)",
          "exit 2, one line: the key is not in lamp's config; added with +, not used by lamp")
def _(ws, tmp):
    return _all_one_line(tmp, [(dm3d_command(ws, "pruning=lamp", f"{plus}{arg}", "tracking=off"),
                                "is not used by pruning.method='lamp'" if plus else f"Could not override 'pruning.{arg.split('=')[0].split('.')[1]}'")
                               for arg in ("pruning.min_density=0.05", "pruning.allocator=lagrangian")
                               for plus in ("", "+")])


@scenario("baseline under pruning.macs_mode=density", "the budget is met in the mode asked for")
def _(ws, tmp):
    run = tmp / "density"
    rc, _, err, _ = _run([*dm3d_command(ws, "pruning=lamp", "pruning.flops_target=0.5", "pruning.macs_mode=density",
                                        "tracking=off", "stage=allocate"), f"hydra.run.dir={run}"], tmp)
    plan = json.loads((Path(_summary(run)["artifacts"]["allocate"]["path"]) / "allocation.json").read_text())
    ratio = plan["flops_ratio"]  # counted in the configured macs_mode
    return rc == 0 and 0.4 < ratio <= 0.5 + 1e-9, f"exit {rc}, allocation flops_ratio {ratio:.4f} (density mode)"


@scenario("an unusable MLflow store (tracking.db_path is a directory)", "exit 2, one line, before any stage")
def _(ws, tmp):
    d = tmp / "store_dir"
    (d / "mlflow.db").mkdir(parents=True)
    rc, _, err, _ = _run(dm3d_command(ws, f"tracking.db_path={d / 'mlflow.db'}"), tmp)
    return _one_line(rc, err, "is not usable")  # immediately, not after MLflow's retries


@scenario("dm3d from the package alone (as a wheel installs it)", "exit 2, one line naming DM3D_REPO")
def _(ws, tmp):
    site = tmp / "site"
    shutil.copytree(REPO / "src" / "dm3d_exp", site / "dm3d_exp", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in ENV.items() if k != "DM3D_REPO"}
    p = subprocess.run([*DM3D, "--cfg", "job"], cwd=tmp, capture_output=True, text=True, timeout=120,
                       env={**env, "PYTHONPATH": str(site)})
    return _one_line(p.returncode, p.stderr, "DM3D_REPO")


@scenario("two identical jobs at once on a fresh cache", "both succeed, every stage computed once")
def _(ws, tmp):
    cache = tmp / "cache_parallel"
    procs = [subprocess.Popen([*dm3d_command(ws, "pruning=uniform", "pruning.flops_target=0.5", "tracking=off"),
                               f"cache_dir={cache}", f"hydra.run.dir={tmp / f'par{i}'}"], cwd=tmp, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    rcs = [p.wait(600) for p in procs]
    summaries = [_summary(tmp / f"par{i}") for i in range(2)]
    misses = {k: sum(s[k] == 0.0 for s in summaries) for k in summaries[0] if k.startswith("cache/")}
    return rcs == [0, 0] and all(v == 1 for k, v in misses.items() if k != "cache/evaluate_hit"), \
        f"exit codes {rcs}; computations per stage {misses}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fault_injection.md")
    p.add_argument("--only", default="")
    args = p.parse_args(argv)
    os.environ.pop("DM3D_CACHE_DIR", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dm3d-faults-") as d:
        root = Path(d)
        ws = make_workspace(root / "ws")
        for name, expected, fn in SCENARIOS:
            if args.only and args.only not in name:
                continue
            tmp = root / f"s{len(rows)}"
            tmp.mkdir()
            start = time.monotonic()
            try:
                ok, observed = fn(ws, tmp)
            except Exception as e:  # a scenario that crashes is a failed row, not a crashed script
                ok, observed = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1:] or ''}"
            rows.append((name, expected, observed, bool(ok)))
            print(f"[{'ok' if ok else 'FAIL'}] {name} ({time.monotonic() - start:.0f} s): {observed}", flush=True)
    table = ["| scenario | expected | observed | ok |", "|---|---|---|---|"]
    table += [f"| {n} | {e} | {o.replace('|', '/')} | {'ok' if k else 'FAIL'} |" for n, e, o, k in rows]
    text = "# Fault injection (bench/fault_injection.py)\n\n" + "\n".join(table) + "\n"
    if not args.only:
        args.out.write_text(text)
    print(text)
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
