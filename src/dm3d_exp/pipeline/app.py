"""The `dm3d` Hydra application: validate, run the stages, write summary.json, log to MLflow, print."""
from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import InputError
from ..schema import RunConf, validate
from ..stages import allocate, sensitivity
from ..stages.context import REPO_ROOT
from .run import headline_for_mlflow, headline_metrics, run_description, run_stages, write_summary
from .tracking import JobTracker, Terminated, flatten, terminate_on_sigterm, tracking_uri

CONF_DIR = REPO_ROOT / "conf"


def run_name(method: str, flops_target: float, job_overrides: list[str], swept: dict[str, str]) -> str:
    """``<method>@<target>`` plus this job's value of every other swept override (e.g.
    ``dm3d@0.25 calib.num_frames=32``): what tells a sweep's runs apart, at a glance."""
    mine = dict(o.lstrip("+~").split("=", 1) for o in job_overrides if "=" in o)
    extra = [f"{k}={mine[k]}" for k in swept if k not in ("pruning", "pruning.flops_target") and k in mine]
    return " ".join([f"{method}@{flops_target:g}", *extra])


def _hydra_runtime(conf: RunConf) -> tuple[Path, str, str | None]:
    """(output dir, run name, parent run id when inside a tracked multirun)."""
    from hydra.core.hydra_config import HydraConfig

    from .callbacks import parent_run_id_for_job, swept_for_job

    hc = HydraConfig.get()
    multirun = hc.mode.name == "MULTIRUN"
    parent = parent_run_id_for_job(hc.sweep.dir) if multirun else None
    name = run_name(conf.pruning.method, conf.pruning.flops_target, list(hc.overrides.task), swept_for_job(hc.sweep.dir) if multirun else {})
    return Path(hc.runtime.output_dir), name, parent


def _plots(out: Path, entries: dict) -> list[Path]:
    from .. import plots

    made = []
    if "sensitivity" in entries:
        curves, _ = sensitivity.load(entries["sensitivity"])
        made.append(plots.sensitivity_plot(curves, out / "sensitivity_curves.png"))
        np.savez(out / "sensitivity_curves.npz", **curves)
        made.append(out / "sensitivity_curves.npz")
    if "allocate" in entries:
        plan = allocate.load(entries["allocate"])
        made.append(plots.sparsity_bars({n: v["sparsity"] for n, v in plan["layers"].items()},
                                        out / "layer_sparsity.png"))
        made.append(entries["allocate"].path / "allocation.json")
    return [Path(p) for p in made]


def print_table(conf: RunConf, summary: dict, out: Path, uri: str | None) -> None:
    """Short human summary: dense vs pruned mAP and per-class AP, MACs, reduction, sparsity, times."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    recovery = conf.recovery.method if conf.recovery.statistics == "none" else \
        f"{conf.recovery.method} + {conf.recovery.statistics}"
    aware = ", reconstruction-aware curves" if summary.get("allocation/reconstruction_aware") else ""
    t = Table(title=f"{conf.detector.name} on {conf.dataset.name}: {conf.pruning.method} @ "
                    f"{conf.pruning.flops_target:g} of dense FLOPs, recovery {recovery}{aware}")
    t.add_column("metric")
    t.add_column("dense", justify="right")
    t.add_column("pruned", justify="right")
    keys = ["mAP"] + [f"{c}/3d/moderate/R40" for c in conf.dataset.classes]
    for k in keys:
        d, p = summary.get(f"dense/eval/{k}"), summary.get(f"pruned/eval/{k}")
        if d is not None or p is not None:
            t.add_row(k, f"{d:.2f}" if d is not None else "-", f"{p:.2f}" if p is not None else "-")
        if k == "mAP" and "pruned/eval/mAP_ci_low" in summary:
            ci = [f"{summary[f'{w}/eval/mAP_ci_low']:.1f}-{summary[f'{w}/eval/mAP_ci_high']:.1f}"
                  if f"{w}/eval/mAP_ci_low" in summary else "-" for w in ("dense", "pruned")]
            t.add_row("  95% interval (frame bootstrap)", *ci)
    gt = [f"{c} {summary[f'pruned/eval/num_gt/{c}']:.0f}" for c in conf.dataset.classes
          if f"pruned/eval/num_gt/{c}" in summary]
    if gt:
        t.add_row("ground-truth boxes", "", ", ".join(gt))
    if "pruned/cost/macs_dense" in summary:
        t.add_row("GMACs", f"{summary['pruned/cost/macs_dense'] / 1e9:.3f}", f"{summary['pruned/cost/macs_pruned'] / 1e9:.3f}")
        t.add_row("FLOPs reduction", "1.00x", f"{summary['pruned/cost/flops_reduction']:.2f}x")
        t.add_row("sparsity (prunable)", "0.000", f"{summary['pruned/cost/sparsity']:.3f}")
    for k in ("distortion/predicted", "distortion/measured"):
        if k in summary:
            t.add_row(k, "", f"{summary[k]:.4g}")
    if "pruned/recovery/layers" in summary:
        rec = ", ".join(f"{k.rsplit('layers_', 1)[1]} {v:.0f}" for k, v in summary.items()
                        if k.startswith("pruned/recovery/layers_"))
        t.add_row("recovery: layers", "", rec)
        if "pruned/recovery/error_zeroed_mean" in summary:
            t.add_row("recovery: rel. layer error", "",
                      f"{summary['pruned/recovery/error_zeroed_mean']:.4f} -> "
                      f"{summary['pruned/recovery/error_reconstructed_mean']:.4f}")
    console.print(t)
    times = ", ".join(f"{k[5:-2]} {v:.1f}s{' (cached)' if summary.get('cache/' + k[5:-2] + '_hit') else ''}"
                      for k, v in summary.items() if k.startswith("time/"))
    console.print(f"stages: {times}")
    console.print(f"summary: {out / 'summary.json'}")
    if uri:
        console.print(f"MLflow: {uri}  (open the UI: make ui, or mlflow ui --backend-store-uri {uri}; then "
                      "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning)")


def task(cfg: DictConfig) -> dict:
    """Hydra task function for one job. The tracking backend is checked before any work (JobTracker's entry
    runs ``ensure_store``); the job's MLflow
    run starts with the job (params first, each stage's time as it finishes, the summary at the end) and
    ends FINISHED, FAILED (an exception, bad input included: tag ``dm3d.error``) or KILLED (Ctrl-C, SIGTERM).
    Bad input: one line on stderr, exit 2."""
    try:
        conf = validate(cfg)
        out, name, parent = _hydra_runtime(conf)
        uri = tracking_uri(asdict(conf.tracking), os.getcwd())
        with terminate_on_sigterm(), JobTracker(uri, conf.study, name, parent_run_id=parent, tags={
                "dm3d.method": conf.pruning.method, "dm3d.stage": conf.stage}) as tracker:
            tracker.log_params(flatten(asdict(conf)))
            summary, entries, _ = run_stages(conf, on_stage=tracker.log_metrics)
            write_summary(out / "summary.json", summary, conf, entries)
            (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(conf)))
            artifacts = _plots(out, entries) if summary else []
            head = headline_metrics(summary, conf.dataset.classes)
            tracker.log_metrics({k: v for k, v in {**summary, **headline_for_mlflow(head)}.items() if np.isfinite(v)})
            tracker.set_tags({"mlflow.note.content": run_description(conf, head)})
            tracker.set_tags({f"dm3d.artifact.{k}": str(e.path) for k, e in entries.items()})
            for path in [out / "summary.json", out / "config_resolved.yaml", *artifacts]:
                tracker.log_artifact(path)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if summary:
        print_table(conf, summary, out, uri)
    return summary


def check_group_choices(argv: list[str]) -> None:
    """Refuse, with one line, a command-line override Hydra cannot parse or a config-group option that does
    not exist (Hydra itself exits 1 with a traceback-like report): InputError naming the value and the
    options. Sweep lists (``pruning=dm3d,lamp``) are checked value by value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    tokens = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(tokens)
    except Exception as e:  # hydra's OverrideParseException and friends
        raise InputError(f"cannot parse the overrides: {str(e).splitlines()[0]}") from None
    for o in overrides:
        group = CONF_DIR / o.key_or_group
        if o.is_delete() or o.package is not None or not group.is_dir() or o.key_or_group.startswith("hydra"):
            continue  # (hydra/* groups also get their options from installed plugins)
        options = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        values = [str(v) for v in o.sweep_iterator()] if o.is_sweep_override() else [str(o.value())]
        for v in values:
            if v not in options:
                raise InputError(f"{o.key_or_group}={v!r} is not an option, expected one of: {', '.join(options)}")
    _check_composes(overrides)


def _check_composes(overrides) -> None:
    """Compose the config once with the overrides (a sweep's first value of each swept key; hydra's own
    keys left out): a key the config does not have, or a value it cannot take, is one InputError line
    (Hydra itself prints a multi-line report and exits 1)."""
    from hydra import compose, initialize_config_dir

    concrete = []
    for o in overrides:
        if o.key_or_group.startswith("hydra") or o.package is not None:
            continue
        if not o.is_sweep_override():
            concrete.append(o.input_line)
            continue
        prefix = "++" if o.is_force_add() else "+" if o.is_add() else ""
        concrete.append(f"{prefix}{o.key_or_group}={_text(next(iter(o.sweep_iterator())))}")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose("config", overrides=concrete)
    except Exception as e:  # ConfigCompositionException, OverrideParseException, OmegaConf errors
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join(lines[:2])
        raise InputError(f"the overrides do not fit the config: {detail}") from None


def _text(value) -> str:
    """An override value as Hydra's grammar reads it back (strings quoted when they need it)."""
    if isinstance(value, str):
        return value if value.replace(".", "").replace("_", "").replace("-", "").replace("/", "").isalnum() \
            else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def main() -> None:
    """Entry point of `dm3d` (Hydra CLI: overrides, --multirun, --cfg job, ...); exit 2 on bad input."""
    import hydra

    try:
        if not (CONF_DIR / "config.yaml").is_file():
            raise InputError(f"no dm3d config tree at {CONF_DIR}: dm3d runs from a clone (make install: an "
                             "editable install), or set DM3D_REPO to a clone's root")
        check_group_choices(sys.argv[1:])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    os.environ.setdefault("DM3D_REPO", str(REPO_ROOT))
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()
    except KeyboardInterrupt as e:  # runs were ended KILLED, temp files removed: no traceback
        print(f"dm3d: {'terminated' if isinstance(e, Terminated) else 'interrupted'}", file=sys.stderr)
        raise SystemExit(143 if isinstance(e, Terminated) else 130) from None
