"""One-time runtime setup for mmdet3d + spconv on the current machine."""
from __future__ import annotations

import functools
import itertools

import torch

_SCOPES = itertools.count()


def setup_mmdet3d() -> None:
    """:func:`_setup_once`, then make ``mmdet3d`` the current mmengine default scope again if something
    (an mmengine ``Runner`` of another library, a test) made another scope current since: registries
    resolve the project's mmdet3d modules (``KittiFrameIdDataset``, ``DevkitKittiMetric``) through it."""
    _setup_once()
    from mmengine.registry import DefaultScope

    current = DefaultScope.get_current_instance()
    if current is None or current.scope_name != "mmdet3d":
        DefaultScope.get_instance(f"dm3d_exp_{next(_SCOPES)}", scope_name="mmdet3d")


@functools.cache
def _setup_once() -> None:
    """Register mmdet3d modules (and the project's metric), make spconv's CPU convolution race-free
    (:mod:`.spconv_cpu`) and its backward work without CUDA, and give PV-RCNN's mmcv point ops a CPU path
    (:mod:`.point_ops`).

    spconv 2.3.8's CPU build calls ``torch.cuda.current_stream()`` before its CPU path in backward
    (``Torch not compiled with CUDA enabled``); with no CUDA the stream handle is unused, so it is
    replaced by 0 (../shared/docs/STACK.md: checked against dense conv3d, gradients within 5.7e-6).
    """
    from mmdet3d.utils import register_all_modules
    from mmengine.logging import MMLogger

    register_all_modules(init_default_scope=True)
    # the newest MMLogger instance is mmengine's "current" one: keep dataset/metric chatter at WARNING
    MMLogger.get_instance("dm3d_exp", log_level="WARNING")
    from . import mmdet3d_modules, point_ops, spconv_cpu  # noqa: F401  (register the project's modules)

    point_ops.install()  # PV-RCNN's point ops on CPU (mmcv has CUDA kernels only)
    spconv_cpu.install()  # spconv's CPU gather/scatter convolution is wrong with > 1 thread

    if not torch.cuda.is_available():
        try:
            import spconv.pytorch.cppcore as cppcore
            import spconv.pytorch.ops as ops
        except ImportError:
            return
        cppcore.get_current_stream = lambda: 0
        ops.get_current_stream = lambda: 0
