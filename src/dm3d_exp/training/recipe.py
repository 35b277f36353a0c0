"""Training recipe for the reference detectors on the synthetic benchmark (mmengine Runner, CPU or GPU).

``train(options)`` builds an mmengine Runner from the detector's mmdet3d config with the generated
dataset as ``data_root``, trains with a fixed seed, validates on the synthetic val split with
``DevkitKittiMetric``, scores a fixed val subset for later reproduction checks, and publishes
``checkpoints/<name>/model.pth`` (model state dict only, fp32) plus ``manifest.json``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from mmengine.hooks import Hook

from ..adapters.detector import build_detector
from ..errors import InputError
from ..kitti.format import EVAL_CLASSES
from ..fileio import atomic_write_bytes, file_sha256
from .detectors import repo_root, resolve_detector

CHECKPOINT_FILE = "model.pth"
MANIFEST_FILE = "manifest.json"


def config_sha256(config: str | os.PathLike) -> str:
    """Hex sha256 of the *resolved* config (``_base_`` inheritance applied, ``data_root`` normalised).

    Canonical JSON of the mmengine config tree, so refactoring a config file (moving shared blocks into a
    ``_base_``) keeps the digest while any change of a value the model or the training sees changes it.
    Top-level names starting with ``_`` are left out: they are shared blocks a ``_base_`` file offers
    (``{{_base_._sparse_encoder}}``), which count where they are used.
    """
    cfg = load_config(config, "/dm3d-data-root")
    text = json.dumps({k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def load_config(config: str | os.PathLike, data_root: str | os.PathLike | None = None):
    """mmengine Config of an mmdet3d config file with its ``data_root`` replaced by ``data_root``.

    ``config`` may use the ``mmdet3d::`` prefix (mmdet3d's shipped configs). Every string value starting
    with the file's own ``data_root`` (dataset roots, info files, the GT database, the evaluator's
    ann_file) is rebased, so one argument points the whole config at a dataset.
    """
    from ..adapters.detector import load_config as load_mmdet3d_config, rebase_data_root

    cfg = load_mmdet3d_config(str(config))
    return cfg if data_root is None else rebase_data_root(cfg, data_root)


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None keeps the default).

    On a shared 2-core machine one thread can be several times faster than two: each OpenMP parallel
    region waits for the thread that lost its core (measured 27 ms vs 6 ms for a 32-channel 3x3 conv).
    """
    if threads:
        torch.set_num_threads(int(threads))


def evaluate(model, config, num_frames: int | None = None) -> dict[str, float]:
    """Score ``model`` on the config's val split (its first ``num_frames`` frames when given).

    Uses the config's ``val_dataloader`` and ``val_evaluator`` (``DevkitKittiMetric`` for the synthetic
    detectors); returns the metric dict (``mAP``, ``<Class>/3d/moderate/R40``, ...).
    """
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner

    from ..adapters import kitti_metric  # noqa: F401  (registers the val_evaluator's DevkitKittiMetric)
    from ..adapters.runtime import setup_mmdet3d

    setup_mmdet3d()
    loader_cfg = copy.deepcopy(config.val_dataloader)
    loader_cfg["num_workers"] = 0
    loader_cfg.pop("persistent_workers", None)
    if num_frames is not None:
        loader_cfg["dataset"]["indices"] = int(num_frames)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    evaluator = Evaluator(copy.deepcopy(config.val_evaluator))
    evaluator.dataset_meta = loader.dataset.metainfo
    model.eval()
    with torch.no_grad():
        for batch in loader:
            outputs = model.test_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
    return unprefixed(evaluator.evaluate(len(loader.dataset)))


def unprefixed(metrics: dict[str, float]) -> dict[str, float]:
    """Metric dict without mmdet3d's ``Kitti metric/`` key prefix."""
    prefix = "Kitti metric/"
    return {k[len(prefix):] if k.startswith(prefix) else k: float(v) for k, v in metrics.items()}


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The manifest's summary of a metric dict: mAP and per-class moderate 3D AP R40."""
    out = {"mAP": float(metrics["mAP"])}
    for cls in EVAL_CLASSES:
        key = f"{cls}/3d/moderate/R40"
        if key in metrics:
            out[key] = float(metrics[key])
    return out


def machine() -> dict:
    """Where a run happened: CPU model, core count, torch threads, accelerator."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    """Versions of the packages that determine the trained weights."""
    import mmcv
    import mmdet3d
    import mmengine

    out = {"torch": torch.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
           "mmdet3d": mmdet3d.__version__}
    try:
        import spconv

        out["spconv"] = spconv.__version__
    except ImportError:
        pass
    return out


@dataclass
class TrainOptions:
    """Options of ``dm3d-train`` (``key=value`` on the command line; dataset params as ``data.<field>``).

    ``max_epochs``/``batch_size``/``lr`` default to the detector config's; the one-cycle schedule is
    stretched to ``max_epochs``. ``check_frames`` val frames are scored again after saving and stored in
    the manifest, so a test can reproduce them quickly.
    """

    detector: str = "pointpillars_synth"
    seed: int = 0
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    val_interval: int | None = None
    threads: int | None = None
    data_root: str | None = None  # default: ensure_dataset(SynthParams(**data)) in the user cache
    data: dict = field(default_factory=dict)
    work_dir: str | None = None  # default: outputs/train/<detector>
    out_dir: str | None = None  # default: checkpoints/<detector>
    check_frames: int = 60
    log_interval: int = 10
    init_from: str | None = None  # warm start: weights of this checkpoint (fresh optimizer and schedule)
    trust_checkpoint: bool = False  # unpickle init_from without weights_only restrictions (code execution risk)


class _WarmStart(Hook):
    """Loads the ``init_from`` weights (already read weights-only) strictly at the start of training: after
    mmengine's weight initialisation, before the recorder snapshots the initial parameters."""

    priority = "VERY_HIGH"

    def __init__(self, contents, path: Path, expected: str) -> None:
        self.contents, self.path, self.expected = contents, path, expected

    def before_train(self, runner) -> None:
        from ..adapters.checkpoint import load_state_strict

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        load_state_strict(model, self.contents, self.path, self.expected)
        self.contents = None


class _Recorder(Hook):
    """Records the training losses, the initialised parameters and the last validation metrics."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.metrics: dict = {}
        self.initial: dict[str, torch.Tensor] = {}

    def before_train(self, runner) -> None:
        self.initial = {k: p.detach().clone() for k, p in runner.model.named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if outputs and "loss" in outputs:
            loss = outputs["loss"]
            self.losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = unprefixed(metrics or {})

    def relative_change(self, model) -> float:
        """||w - w0|| / ||w0|| over all parameters since ``before_train``."""
        num = den = 0.0
        for k, p in model.named_parameters():
            w0 = self.initial[k].to(p.device)
            num += float(((p.detach() - w0) ** 2).sum())
            den += float((w0 ** 2).sum())
        return (num / den) ** 0.5 if den else float("nan")


def _scale_schedule(cfg, max_epochs: int) -> None:
    """Stretch the config's epoch-based schedulers (begin/end/T_max) from its max_epochs to ``max_epochs``."""
    old = cfg.train_cfg.max_epochs
    f = max_epochs / old
    for sched in cfg.get("param_scheduler", []) or []:
        for key in ("begin", "end", "T_max"):
            if key in sched:
                sched[key] = sched[key] * f
    cfg.train_cfg.max_epochs = max_epochs


def _prepare_config(opts: TrainOptions, config_path: Path, data_root: Path, work_dir: Path):
    cfg = load_config(config_path, data_root)
    if opts.max_epochs is not None:
        _scale_schedule(cfg, opts.max_epochs)
    if opts.val_interval is not None:
        cfg.train_cfg.val_interval = opts.val_interval
    if opts.batch_size is not None:
        cfg.train_dataloader.batch_size = opts.batch_size
    if opts.lr is not None:
        for sched in cfg.get("param_scheduler", []) or []:
            if sched.get("type") == "CosineAnnealingLR" and "eta_min" in sched:
                sched["eta_min"] = sched["eta_min"] / cfg.optim_wrapper.optimizer.lr * opts.lr
        cfg.optim_wrapper.optimizer.lr = opts.lr
    cfg.default_hooks.logger.interval = opts.log_interval
    cfg.work_dir = str(work_dir)
    cfg.load_from = None  # init_from is loaded by _WarmStart (weights-only), never by mmengine's torch.load
    cfg.resume = False
    cfg.randomness = dict(seed=opts.seed, deterministic=False)
    cfg.launcher = "none"
    return cfg


def train(opts: TrainOptions) -> dict:
    """Train detector ``opts.detector`` and publish its checkpoint and manifest; return the manifest."""
    from mmengine.runner import Runner

    from ..adapters import kitti_metric  # noqa: F401  (registers the val_evaluator's DevkitKittiMetric)
    from ..adapters.checkpoint import read_checkpoint_file, save_checkpoint
    from ..adapters.runtime import setup_mmdet3d
    from ..data import SynthParams, ensure_dataset, read_manifest

    set_threads(opts.threads)
    spec = resolve_detector(opts.detector, require_checkpoint=False)
    init = _init_record(opts.init_from)  # before generating any data: a bad path or file fails at once
    warm = None
    if opts.init_from is not None:
        path = Path(opts.init_from).expanduser()
        warm = _WarmStart(read_checkpoint_file(path, opts.trust_checkpoint, "trust_checkpoint"), path,
                          f"detector {spec.name} ({_rel(spec.config)})")
    if opts.data_root is not None:
        data_root = Path(opts.data_root).expanduser().absolute()
    else:
        data_root = ensure_dataset(SynthParams.from_dict(dict(opts.data)))
    data_manifest = read_manifest(data_root)
    work_dir = Path(opts.work_dir or repo_root() / "outputs" / "train" / spec.name)
    out_dir = Path(opts.out_dir or repo_root() / "checkpoints" / spec.name)
    setup_mmdet3d()
    digest = config_sha256(spec.config)
    cfg = _prepare_config(opts, spec.config, data_root, work_dir)

    rec = _Recorder()
    runner = Runner.from_cfg(cfg)
    if warm is not None:
        runner.register_hook(warm, priority="VERY_HIGH")
    runner.register_hook(rec, priority="LOWEST")
    t0 = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - t0
    losses = rec.losses
    n10 = max(1, len(losses) // 10)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    model = model.float().cpu().eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CHECKPOINT_FILE
    save_checkpoint(model, ckpt, meta={"detector": spec.name, "config": _rel(spec.config), "seed": opts.seed})
    eval_cfg = load_config(spec.config, data_root)
    reloaded = build_detector(eval_cfg, ckpt)
    check = headline(evaluate(reloaded, eval_cfg, opts.check_frames))
    manifest = {
        "name": spec.name,
        "config": {"path": _rel(spec.config), "sha256": digest, "digest_of": "resolved config (config_sha256)"},
        "seed": opts.seed,
        "options": asdict(opts),
        "data": {"generator_version": data_manifest["generator_version"], "params": data_manifest["params"],
                 "digest": data_manifest.get("digest")},
        "training": {"seconds": round(seconds, 1), "iterations": runner.iter, "epochs": runner.epoch,
                     "s_per_iter": round(seconds / max(runner.iter, 1), 3),
                     "batch_size": cfg.train_dataloader.batch_size, "machine": machine(), "versions": versions(),
                     "loss_first": losses[0], "loss_last": losses[-1],
                     "loss_mean_first_10pct": sum(losses[:n10]) / n10, "loss_mean_last_10pct": sum(losses[-n10:]) / n10,
                     "relative_weight_change": rec.relative_change(runner.model),
                     "init_from": init,
                     "total_epochs": runner.epoch + (init or {}).get("total_epochs", 0),
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "val": {"split": "val", "frames": data_manifest["params"]["num_val"], **headline(rec.metrics),
                "all": {k: float(v) for k, v in rec.metrics.items()}},
        "check_subset": {"split": "val", "first_frames": opts.check_frames, **check},
        "checkpoint": {"file": CHECKPOINT_FILE, "sha256": file_sha256(ckpt), "bytes": ckpt.stat().st_size,
                       "params": sum(p.numel() for p in model.parameters())},
    }
    atomic_write_bytes(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def _init_record(init_from: str | None) -> dict | None:
    """Lineage of a warm start: the initial checkpoint's sha256 and, when it sits next to its manifest,
    that manifest's epochs and val mAP (``total_epochs`` accumulates over warm starts)."""
    if init_from is None:
        return None
    path = Path(init_from).expanduser()
    if not path.is_file():
        raise InputError(f"init_from={init_from!r}: no such checkpoint file")
    out = {"file": _rel(path.absolute()), "sha256": file_sha256(path)}
    prior = path.parent / MANIFEST_FILE
    if prior.is_file():
        m = json.loads(prior.read_text())
        if m.get("checkpoint", {}).get("sha256") == out["sha256"]:
            t = m.get("training", {})
            out.update(total_epochs=int(t.get("total_epochs", t.get("epochs", 0))),
                       val_mAP=m.get("val", {}).get("mAP"), finished=t.get("finished"))
    return out


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)
