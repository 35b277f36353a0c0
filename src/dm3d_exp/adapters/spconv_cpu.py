"""Race-free CPU path of spconv's gather-matmul-scatter convolution (forward and backward).

spconv 2.3.8's CPU build runs a sparse convolution as, per kernel tap ``i``: gather the input rows of the
tap's pairs (``SpconvOps.gather_cpu``), multiply by the tap's weight matrix, and scatter-add into the
output rows (``SpconvOps.scatter_add_cpu``). With more than one torch thread that path returns wrong
values: measured on 20,000 active voxels, 32 -> 64 channels, three calls of one layer on one input differ
by up to 40 (outputs ~ 50) at 2 threads and are identical at 1 thread (issue 10 §0). The curves, masks and
mAP of every stage inherited that noise.

:func:`indice_conv` and :func:`indice_conv_backward` compute the same convolution in plain torch, in the
same tap order and with the same subm centre-first convention::

    out[pair_out[i, :n_i]] += features[pair_in[i, :n_i]] @ W_i^T          (tap by tap, i = 0 .. K-1)
    d_features[pair_in[i]] += d_out[pair_out[i]] @ W_i,   dW_i = d_out[pair_out[i]]^T @ features[pair_in[i]]

where ``W_i`` is the tap's ``(C_out, C_in)`` matrix. Within one tap every output row appears at most once,
so ``index_add_`` has no write conflict, and the order of additions across taps is fixed: every call gives
the same bytes, and thread counts differ only by the rounding of torch's matrix products (MKL splits some
products by thread, which is why the pipeline fixes the count: the ``threads`` key). :func:`install`
routes spconv's module-level functions through a dispatcher that keeps spconv's own kernels for CUDA
tensors.
"""
from __future__ import annotations

import functools

import torch


def _tap_matrices(filters: torch.Tensor, krsc: bool, hwio: bool) -> tuple[torch.Tensor, int]:
    """``(taps, kv)``: the filters as ``(K, C_out, C_in)`` (a view where the layout allows) and
    the number of taps. spconv stores ``KRSC`` (``C_out, *kernel, C_in``) or, in older builds, ``RSKC``/
    ``RSCK`` (``*kernel, C_out, C_in`` or ``*kernel, C_in, C_out`` with ``hwio``)."""
    if krsc:
        taps = filters.reshape(filters.shape[0], -1, filters.shape[-1]).transpose(0, 1)
    else:
        taps = filters.reshape(-1, *filters.shape[-2:])
        if hwio:
            taps = taps.transpose(1, 2)
    return taps, taps.shape[0]


def _tap_counts(indice_pair_num: torch.Tensor, kv: int, subm: bool) -> list[int]:
    """Number of pairs per tap; spconv's subm rulebook stores only the first half of the counts and the
    mirror tap ``K - 1 - i`` has the same number."""
    counts = [int(v) for v in indice_pair_num.cpu().tolist()]
    if subm:
        counts = [counts[kv - i - 1] if i > kv // 2 else counts[i] for i in range(kv)]
        counts[kv // 2] = 0  # the centre tap is the identity pairing, applied densely
    return counts


def indice_conv(features: torch.Tensor, filters: torch.Tensor, indice_pairs: torch.Tensor,
                indice_pair_num: torch.Tensor, num_activate_out: int, inverse: bool = False,
                subm: bool = False, *, krsc: bool = True, hwio: bool = False) -> torch.Tensor:
    """Sparse convolution output ``(num_activate_out, C_out)`` (module docstring formula)."""
    taps, kv = _tap_matrices(filters, krsc, hwio)
    features = features.contiguous()
    if subm:
        out = features @ taps[kv // 2].T
    else:
        out = features.new_zeros((num_activate_out, taps.shape[1]))
    pair_in, pair_out = indice_pairs[int(inverse)], indice_pairs[int(not inverse)]
    for i, n in enumerate(_tap_counts(indice_pair_num, kv, subm)):
        if n > 0:
            out.index_add_(0, pair_out[i, :n], features.index_select(0, pair_in[i, :n]) @ taps[i].T)
    return out


def indice_conv_backward(features: torch.Tensor, filters: torch.Tensor, out_bp: torch.Tensor,
                         indice_pairs: torch.Tensor, indice_pair_num: torch.Tensor, inverse: bool = False,
                         subm: bool = False, *, krsc: bool = True,
                         hwio: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(d_features, d_filters)`` of :func:`indice_conv` (module docstring formula);
    ``d_filters`` has the shape and layout of ``filters``."""
    taps, kv = _tap_matrices(filters, krsc, hwio)
    features, out_bp = features.contiguous(), out_bp.contiguous()
    d_taps = torch.zeros_like(taps)
    if subm:
        d_features = out_bp @ taps[kv // 2]
        d_taps[kv // 2] = out_bp.T @ features
    else:
        d_features = torch.zeros_like(features)
    pair_in, pair_out = indice_pairs[int(inverse)], indice_pairs[int(not inverse)]
    for i, n in enumerate(_tap_counts(indice_pair_num, kv, subm)):
        if n > 0:
            x, g = features.index_select(0, pair_in[i, :n]), out_bp.index_select(0, pair_out[i, :n])
            d_taps[i] = g.T @ x
            d_features.index_add_(0, pair_in[i, :n], g @ taps[i])
    if krsc:
        d_filters = d_taps.transpose(0, 1).reshape(filters.shape)
    else:
        d_filters = (d_taps.transpose(1, 2) if hwio else d_taps).reshape(filters.shape)
    return d_features, d_filters


def _no_activation():
    try:
        import cumm.tensorview as tv
    except ImportError:
        return None
    return tv.gemm.Activation.None_


_NO_ACT = _no_activation()


def _cpu_dispatch(original, replacement, krsc: bool, hwio: bool):
    @functools.wraps(original)
    def call(features, *args, **kwargs):
        fused = kwargs.get("bias") is not None or kwargs.get("act_type", _NO_ACT) != _NO_ACT
        if features.is_cuda or fused:  # spconv's CPU path refuses bias/activation fusion itself
            return original(features, *args, **kwargs)
        for unused in ("algo", "timer", "bias", "act_alpha", "act_beta", "act_type"):
            kwargs.pop(unused, None)
        return replacement(features, *args, krsc=krsc, hwio=hwio, **kwargs)

    call.__wrapped_by_dm3d__ = True
    return call


def install() -> None:
    """Route ``spconv.pytorch.ops.indice_conv`` / ``indice_conv_backward`` through the race-free CPU
    path (idempotent; CUDA tensors keep spconv's kernels). Only the native gather-GEMM algorithm is
    affected: spconv's implicit-GEMM algorithm has no CPU implementation."""
    try:
        import spconv.pytorch.ops as ops
    except ImportError:
        return
    if getattr(ops.indice_conv, "__wrapped_by_dm3d__", False):
        return
    krsc, hwio = bool(ops.ALL_WEIGHT_IS_KRSC), bool(ops.FILTER_HWIO)
    ops.indice_conv = _cpu_dispatch(ops.indice_conv, indice_conv, krsc, hwio)
    ops.indice_conv_backward = _cpu_dispatch(ops.indice_conv_backward, indice_conv_backward, krsc, hwio)
