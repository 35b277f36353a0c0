"""Canonical weight views of prunable layers, one adapter per layer type (Torch-Pruning-style registry).

Every prunable layer is seen by the core as a tensor ``w`` of shape [K, Cout, Cin] (K kernel taps /
offsets) that is a *view* of the module's weight, so masking the view masks the module (METHOD.md §7).

| layer                          | stored weight                    | view                              |
|--------------------------------|----------------------------------|-----------------------------------|
| nn.Linear                      | [Cout, Cin]                      | unsqueeze(0)                      |
| nn.Conv1d/2d/3d (groups g)     | [Cout, Cin/g, *k]                | flatten k, permute -> [K,Cout,Cin/g] |
| nn.ConvTranspose1d/2d/3d       | [Cin, Cout/g, *k]                | flatten k, permute -> [K,Cout/g,Cin] |
| spconv 2 KRSC (2.2+, all algos) | [Cout, *k, Cin]                 | reshape [Cout,K,Cin], permute     |
| spconv RSKC (old native)       | [*k, Cout, Cin]                  | reshape                           |
| spconv RSCK (old native, HWIO) | [*k, Cin, Cout]                  | reshape, transpose                |
| mmcv.ops sparse conv (spconv 1) | [*k, Cin, Cout] (RSCK)          | reshape, transpose                |
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """Static facts about a prunable layer used for MACs accounting (METHOD.md §7)."""

    kind: str  # 'linear' | 'conv' | 'conv_transpose' | 'sparse_conv' | 'subm_conv' | 'sparse_inverse_conv'
    taps: int
    cout: int
    cin: int  # per group for grouped convolutions
    groups: int = 1
    kernel: tuple[int, ...] = ()  # kernel dims (product = taps); () for Linear


_VIEWS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], torch.Tensor], Callable[[nn.Module], LayerSpec]]] = []


def register_layer_view(matches: Callable[[nn.Module], bool]):
    """Register a (view, spec) pair for modules where ``matches(module)`` is true; later wins."""

    def deco(cls):
        _VIEWS.insert(0, (matches, cls.view, cls.spec))
        return cls

    return deco


def _lookup(module: nn.Module):
    for matches, view, spec in _VIEWS:
        if matches(module):
            return view, spec
    return None


def is_prunable(module: nn.Module) -> bool:
    return _lookup(module) is not None


def weight_view(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """[K, Cout, Cin] view of ``module.weight`` (or of ``weight``, a tensor with the module's layout)."""
    found = _lookup(module)
    if found is None:
        raise TypeError(f"no layer view registered for {type(module).__name__}")
    view = found[0](module) if weight is None else found[0](_Shadow(module, weight))
    return view


def layer_spec(module: nn.Module) -> LayerSpec:
    found = _lookup(module)
    if found is None:
        raise TypeError(f"no layer view registered for {type(module).__name__}")
    return found[1](module)


class _Shadow:
    """Attribute proxy exposing another tensor as ``weight`` (for gradients and masks in module layout)."""

    def __init__(self, module: nn.Module, weight: torch.Tensor):
        self._module, self.weight = module, weight

    def __getattr__(self, name):
        return getattr(self._module, name)


def prunable_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Named modules that have a registered view and a weight, in ``named_modules`` order."""
    for name, module in model.named_modules():
        if getattr(module, "weight", None) is not None and is_prunable(module):
            yield name, module


@register_layer_view(lambda m: isinstance(m, nn.Linear))
class LinearView:
    @staticmethod
    def view(m):
        return m.weight.unsqueeze(0)

    @staticmethod
    def spec(m):
        return LayerSpec("linear", 1, m.out_features, m.in_features)


@register_layer_view(lambda m: isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)))
class ConvView:
    @staticmethod
    def view(m):
        w = m.weight
        return w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)

    @staticmethod
    def spec(m):
        w = m.weight
        return LayerSpec("conv", math.prod(w.shape[2:]), w.shape[0], w.shape[1], m.groups, tuple(w.shape[2:]))


@register_layer_view(lambda m: isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)))
class ConvTransposeView:
    @staticmethod
    def view(m):
        w = m.weight
        return w.reshape(w.shape[0], w.shape[1], -1).permute(2, 1, 0)

    @staticmethod
    def spec(m):
        w = m.weight
        return LayerSpec("conv_transpose", math.prod(w.shape[2:]), w.shape[1], w.shape[0], m.groups,
                         tuple(w.shape[2:]))


@functools.cache
def _spconv_module_types() -> tuple[type, ...]:
    """spconv 2's SparseConvolution and mmcv's spconv-1 port (used by mmdet3d when spconv is absent)."""
    types = []
    try:
        from spconv.pytorch.conv import SparseConvolution
        types.append(SparseConvolution)
    except ImportError:
        pass
    try:
        from mmcv.ops.sparse_conv import SparseConvolution as MmcvSparseConvolution
        types.append(MmcvSparseConvolution)
    except ImportError:
        pass
    return tuple(types)


def spconv_layout(m: nn.Module) -> str:
    """Weight layout of a spconv layer: 'KRSC', 'RSKC' or 'RSCK', read from the weight shape and channels."""
    shape = tuple(m.weight.shape)
    k = tuple(m.kernel_size)
    if shape == (m.out_channels, *k, m.in_channels):
        return "KRSC"
    if shape == (*k, m.out_channels, m.in_channels):
        return "RSKC"
    if shape == (*k, m.in_channels, m.out_channels):
        return "RSCK"
    raise ValueError(f"spconv weight shape {shape} matches no known layout for kernel {k}, "
                     f"Cin={m.in_channels}, Cout={m.out_channels}")


def spconv_kind(m: nn.Module) -> str:
    if getattr(m, "subm", False):
        return "subm_conv"
    if getattr(m, "inverse", False):
        return "sparse_inverse_conv"
    return "sparse_conv"


@register_layer_view(lambda m: bool(_spconv_module_types()) and isinstance(m, _spconv_module_types()))
class SpconvView:
    @staticmethod
    def view(m):
        w, layout = m.weight, spconv_layout(m)
        cout, cin = m.out_channels, m.in_channels
        if layout == "KRSC":
            return w.reshape(cout, -1, cin).permute(1, 0, 2)
        if layout == "RSKC":
            return w.reshape(-1, cout, cin)
        return w.reshape(-1, cin, cout).transpose(1, 2)

    @staticmethod
    def spec(m):
        return LayerSpec(spconv_kind(m), math.prod(m.kernel_size), m.out_channels, m.in_channels,
                         kernel=tuple(m.kernel_size))
