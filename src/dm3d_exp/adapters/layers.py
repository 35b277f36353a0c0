"""Prunable layer types, one registered class per type (:data:`LAYER_TYPES`, Torch-Pruning-style): each owns
its canonical weight view, MACs spec, per-tap pair counts, im2col and outputs (``register_layer_type``).
A new layer type is one class here (or in its own module, imported by ``adapters.runtime``) and its test.

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
from typing import Callable, Iterator, Mapping

import numpy as np

import torch
from torch import nn

from ..core.registry import Registry
from .spconv_pairs import rulebook, tap_pair_counts


@dataclass(frozen=True)
class LayerSpec:
    """Static facts about a prunable layer used for MACs accounting (METHOD.md §7)."""

    kind: str  # 'linear' | 'conv' | 'conv_transpose' | 'sparse_conv' | 'subm_conv' | 'sparse_inverse_conv'
    taps: int
    cout: int
    cin: int  # per group for grouped convolutions
    groups: int = 1
    kernel: tuple[int, ...] = ()  # kernel dims (product = taps); () for Linear


LAYER_TYPES: Registry[type] = Registry("layer type")


def register_layer_type(name: str, module_types: Callable[[], tuple[type, ...]]):
    """Register a layer-type class under ``name`` for modules that are instances of ``module_types()`` (a
    callable, so optional libraries are imported lazily). A taken name is refused, and a module matched by
    two registered types is an error when it is looked up (no registration silently wins).

    The class owns everything about its type as static methods: ``view(m)`` (canonical [K, Cout, Cin]),
    ``spec(m)`` (:class:`LayerSpec`), ``pairs(m, inputs, output, partner)`` (per-tap pair counts n_j of one
    forward, METHOD §7), ``im2col(m, inputs, output, partner)`` (calibration inputs [n_sites, K*Cin],
    columns in (tap, cin) order), ``outputs(m, output)`` ([n_sites, Cout], bias removed):
    ``im2col(...) @ rows(view).T == outputs(...)`` (METHOD §11.1); optionally ``partner(m, modules)``,
    the module whose pairs ``m`` reuses (a SparseInverseConv3d's SparseConv3d).
    """

    def deco(cls):
        cls.name, cls.module_types = name, staticmethod(module_types)
        LAYER_TYPES.add(name, cls)
        _type_of.cache_clear()
        return cls

    return deco


@functools.cache
def _type_of(module_class: type):
    found = [cls for _, cls in LAYER_TYPES.items() if issubclass(module_class, cls.module_types())]
    if len(found) > 1:
        raise TypeError(f"{module_class.__name__} is matched by layer types {[c.name for c in found]}: "
                        f"expected exactly one")
    return found[0] if found else None


def _registered(module: nn.Module):
    cls = _type_of(type(module))
    if cls is None:
        raise TypeError(f"no layer type registered for {type(module).__name__}; registered: "
                        f"{', '.join(LAYER_TYPES.names())}")
    return cls


def is_prunable(module: nn.Module) -> bool:
    return _type_of(type(module)) is not None


def weight_view(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """[K, Cout, Cin] view of ``module.weight`` (or of ``weight``, a tensor with the module's layout)."""
    view = _registered(module).view
    return view(module) if weight is None else view(_Shadow(module, weight))


def layer_spec(module: nn.Module) -> LayerSpec:
    return _registered(module).spec(module)


def rows(view: torch.Tensor) -> torch.Tensor:
    """[Cout, K*Cin] row matrix of a canonical [K, Cout, Cin] view (row i: output channel i, (tap, cin) columns)."""
    return view.permute(1, 0, 2).reshape(view.shape[1], -1)


def from_rows(w_rows: torch.Tensor, view_shape) -> torch.Tensor:
    """Inverse of :func:`rows`: [Cout, K*Cin] -> [K, Cout, Cin]."""
    k, cout, cin = view_shape
    return w_rows.reshape(cout, k, cin).permute(1, 0, 2)


def layer_im2col(module: nn.Module, inputs: tuple, output, partner: nn.Module | None = None) -> torch.Tensor:
    """Calibration inputs [n_sites, K*Cin] of one forward (the arguments of a forward hook); ``partner``:
    the SparseConv3d whose rulebook a SparseInverseConv3d reuses (same indice_key)."""
    return _registered(module).im2col(module, inputs, output, partner)


def layer_pairs(module: nn.Module, inputs: tuple, output, partner: nn.Module | None = None) -> np.ndarray:
    """Per-tap pair counts n_j [K] of one forward (the arguments of a forward hook), METHOD §7."""
    return np.asarray(_registered(module).pairs(module, inputs, output, partner), dtype=np.float64)


def layer_partners(model: nn.Module, layers: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """For every layer of ``layers`` whose type reuses another module's pairs, that module of ``model``."""
    modules = list(model.modules())
    found = {}
    for name, m in layers.items():
        partner = getattr(_registered(m), "partner", None)
        if partner is not None and (p := partner(m, modules)) is not None:
            found[name] = p
    return found


def layer_outputs(module: nn.Module, output) -> torch.Tensor:
    """The layer's real outputs [n_sites, Cout] of one forward, bias removed (the check of im2col)."""
    return _registered(module).outputs(module, output)


def _without_bias(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    bias = getattr(module, "bias", None)
    return y if bias is None else y - bias


def _dense_outputs(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """[N, C, *spatial] -> [N * prod(spatial), C], bias removed."""
    return _without_bias(module, y.movedim(1, -1).reshape(-1, y.shape[1]))


def _no_groups(module: nn.Module) -> None:
    if getattr(module, "groups", 1) != 1:
        raise NotImplementedError(f"{type(module).__name__} with groups={module.groups}: reconstruction supports "
                                  f"groups=1 only")


def _gather_im2col(x: torch.Tensor, index: list[torch.Tensor]) -> torch.Tensor:
    """Patches of a dense [N, C, *in] map: ``index[a]`` [out_a, k_a] is the input coordinate of output
    site o and tap j along spatial dim a (``in_a`` where no input is paired: a zero). -> [N*prod(out), K*C]."""
    nd = len(index)
    xp = torch.nn.functional.pad(x, (0, 1) * nd)  # the zero at coordinate in_a
    grids = []
    for a, idx in enumerate(index):  # broadcast to [out_0, .., out_nd-1, k_0, .., k_nd-1]
        shape = [1] * (2 * nd)
        shape[a], shape[nd + a] = idx.shape
        grids.append(idx.reshape(shape))
    patches = xp[(slice(None), slice(None), *grids)]  # [N, C, *out, *k]
    n, c = x.shape[:2]
    return patches.movedim(1, -1).reshape(n * math.prod(i.shape[0] for i in index), -1)


def _conv_index(n_in: int, n_out: int, k: int, stride: int, padding: int, dilation: int, transposed: bool):
    """Input coordinate (``n_in`` = none) of output o, tap j along one dim: conv i = o*s - p + j*d;
    transposed conv o = i*s - p + j*d."""
    o = torch.arange(n_out).unsqueeze(1)
    j = torch.arange(k).unsqueeze(0)
    if transposed:
        num = o + padding - j * dilation
        i = torch.div(num, stride, rounding_mode="floor")
        ok = (num % stride == 0) & (i >= 0) & (i < n_in)
    else:
        i = o * stride - padding + j * dilation
        ok = (i >= 0) & (i < n_in)
    return torch.where(ok, i, torch.full_like(i, n_in))


def _conv_im2col(m: nn.Module, x: torch.Tensor, y: torch.Tensor, transposed: bool) -> torch.Tensor:
    _no_groups(m)
    if getattr(m, "padding_mode", "zeros") != "zeros":
        raise NotImplementedError(f"{type(m).__name__} with padding_mode={m.padding_mode!r}: expected 'zeros'")
    if isinstance(m.padding, str):
        raise NotImplementedError(f"{type(m).__name__} with padding={m.padding!r}: expected explicit padding")
    index = [_conv_index(x.shape[2 + a], y.shape[2 + a], m.kernel_size[a], m.stride[a], m.padding[a],
                         m.dilation[a], transposed).to(x.device) for a in range(x.ndim - 2)]
    return _gather_im2col(x, index)


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


@register_layer_type("linear", lambda: (nn.Linear,))
class LinearType:
    @staticmethod
    def view(m):
        return m.weight.unsqueeze(0)

    @staticmethod
    def spec(m):
        return LayerSpec("linear", 1, m.out_features, m.in_features)

    @staticmethod
    def pairs(m, inputs, output, partner=None):
        """One tap; a pair per input row."""
        x = inputs[0]
        return [x.numel() / x.shape[-1]]

    @staticmethod
    def im2col(m, inputs, output, partner=None):
        return inputs[0].reshape(-1, m.in_features)

    @staticmethod
    def outputs(m, output):
        return _without_bias(m, output.reshape(-1, m.out_features))


@register_layer_type("conv", lambda: (nn.Conv1d, nn.Conv2d, nn.Conv3d))
class ConvType:
    @staticmethod
    def view(m):
        w = m.weight
        return w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)

    @staticmethod
    def spec(m):
        w = m.weight
        return LayerSpec("conv", math.prod(w.shape[2:]), w.shape[0], w.shape[1], m.groups, tuple(w.shape[2:]))

    @staticmethod
    def pairs(m, inputs, output, partner=None):
        """Every tap pairs every output site (zero padding counted): n_j = N * prod(output spatial)."""
        return [float(output.shape[0] * math.prod(output.shape[2:]))] * math.prod(m.weight.shape[2:])

    transposed = False

    @classmethod
    def im2col(cls, m, inputs, output, partner=None):
        return _conv_im2col(m, inputs[0], output, transposed=cls.transposed)

    @staticmethod
    def outputs(m, output):
        return _dense_outputs(m, output)


@register_layer_type("conv_transpose", lambda: (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
class ConvTransposeType(ConvType):
    transposed = True

    @staticmethod
    def pairs(m, inputs, output, partner=None):
        """Every tap pairs every input site: n_j = N * prod(input spatial)."""
        x = inputs[0]
        return [float(x.shape[0] * math.prod(x.shape[2:]))] * math.prod(m.weight.shape[2:])

    @staticmethod
    def view(m):
        w = m.weight
        return w.reshape(w.shape[0], w.shape[1], -1).permute(2, 1, 0)

    @staticmethod
    def spec(m):
        w = m.weight
        return LayerSpec("conv_transpose", math.prod(w.shape[2:]), w.shape[1], w.shape[0], m.groups,
                         tuple(w.shape[2:]))


@torch.no_grad()
def he_normal_(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal weights for every prunable layer, std sqrt(2 / (taps * Cin)) through the canonical
    [K, Cout, Cin] view (every layout alike): randomly initialised detectors for tests and benchmarks,
    whose 12-layer sparse encoders otherwise shrink their features to ~1e-6 under the default init."""
    g = torch.Generator().manual_seed(seed)
    for _, module in prunable_modules(model):
        view = weight_view(module)
        fan_in = view.shape[0] * view.shape[2]
        view.copy_((torch.randn(view.shape, generator=g) * (2.0 / fan_in) ** 0.5).to(view.device, view.dtype))
    return model


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


@register_layer_type("spconv", _spconv_module_types)
class SpconvType:
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

    @staticmethod
    def partner(m, modules):
        """A SparseInverseConv3d's SparseConv3d (same indice_key, weighted); None for other kinds."""
        if spconv_kind(m) != "sparse_inverse_conv":
            return None
        for other in modules:
            if (other is not m and getattr(other, "indice_key", None) == m.indice_key
                    and getattr(other, "weight", None) is not None
                    and not getattr(other, "subm", False) and not getattr(other, "inverse", False)):
                return other
        raise ValueError(f"inverse conv with indice_key {m.indice_key!r} has no matching SparseConv3d")

    @staticmethod
    def pairs(m, inputs, output, partner=None):
        """Rulebook pair counts from the active sites (spconv_pairs); an inverse conv counts its partner's
        rulebook on its own output sites."""
        kind = spconv_kind(m)
        if getattr(m, "transposed", False) and kind != "sparse_inverse_conv":
            raise NotImplementedError("MACs accounting of SparseConvTranspose layers is not supported")
        if kind == "sparse_inverse_conv":
            if partner is None:
                raise ValueError(f"inverse conv with indice_key {m.indice_key!r}: its SparseConv3d is needed")
            sites, conv = output, partner
        else:
            sites, conv = inputs[0], m
        return tap_pair_counts(sites.indices.detach().cpu().numpy(), sites.spatial_shape, conv.kernel_size,
                               conv.stride, conv.padding, conv.dilation, subm=kind == "subm_conv")

    @staticmethod
    def im2col(m, inputs, output, partner=None):
        """Gather from the rulebook: row o, tap j = the input feature paired with (o, j), zero where none.
        A SparseInverseConv3d reuses ``partner``'s (the SparseConv3d of its indice_key) pairs, roles swapped."""
        x = inputs[0]
        kind = spconv_kind(m)
        if kind == "sparse_inverse_conv":
            if partner is None:
                raise ValueError(f"inverse conv with indice_key {m.indice_key!r}: its SparseConv3d is needed")
            pairs = rulebook(output.indices.cpu().numpy(), x.indices.cpu().numpy(), output.spatial_shape,
                             partner.kernel_size, partner.stride, partner.padding, partner.dilation, subm=False)
            pairs = [(o, i) for i, o in pairs]
        else:
            pairs = rulebook(x.indices.cpu().numpy(), output.indices.cpu().numpy(), x.spatial_shape, m.kernel_size,
                             m.stride, m.padding, m.dilation, subm=kind == "subm_conv")
        feats = x.features
        cols = feats.new_zeros(output.features.shape[0], len(pairs), feats.shape[1])
        for j, (src, dst) in enumerate(pairs):
            cols[torch.from_numpy(dst).to(feats.device), j] = feats[torch.from_numpy(src).to(feats.device)]
        return cols.reshape(cols.shape[0], -1)

    @staticmethod
    def outputs(m, output):
        return _without_bias(m, output.features)
