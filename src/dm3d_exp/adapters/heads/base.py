"""The head-extractor registry: named pre-NMS head outputs of a detector, grouped `loc` / `conf` (METHOD §2).

One :class:`HeadExtractor` per head family, registered under a name and the mmdet3d head classes it reads
(exact class names: a head class nobody registered is refused, never parsed as a look-alike). The model's
extractor is found from its direct children: the one child whose class is registered, after dropping the
heads another registered head reads itself (``uses``: PV-RCNN's RoI head reads its ``rpn_head``). Every
entry supplies its outputs (named ``<site>.<kind>`` or ``<kind>.<site>``, channels at dim 1, positions
after), its loc/conf table (``groups``), the site of every output (outputs at one site share the conf
output whose scores weight them, METHOD §2 extension) and, where the dense and the pruned model must see
the same positions, the data-sample attribute that freezes them (``frozen``).
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch
from torch import nn

from ...core.registry import Registry

HEADS: Registry[type] = Registry("head extractor")
_BY_HEAD_CLASS: dict[str, type] = {}


class HeadExtractor:
    """Base of the head extractors; ``attr`` is the detector attribute holding the head module."""

    head_types: ClassVar[tuple[str, ...]] = ()  # mmdet3d class names of the head module it reads
    groups: ClassVar[Mapping[str, str]] = {}  # output kind -> 'loc' | 'conf'
    uses: ClassVar[tuple[str, ...]] = ()  # other head attributes of the detector this extractor reads itself
    frozen: ClassVar[str] = ""  # data-sample attribute storing positions frozen to the dense model's

    def __init__(self, attr: str):
        self.attr = attr

    def outputs(self, model: nn.Module, inputs: Mapping, data_samples) -> dict[str, torch.Tensor]:
        """Named outputs for preprocessed ``inputs``: the detector's features through the head."""
        return self.name_outputs(getattr(model, self.attr)(detector_features(model, inputs, data_samples)))

    def name_outputs(self, raw) -> dict[str, torch.Tensor]:
        """The head's forward result as named tensors [B, C, *positions]."""
        raise NotImplementedError

    def split(self, name: str) -> tuple[str, str]:
        """(kind, site) of an output name this extractor produced."""
        raise NotImplementedError

    def group(self, name: str) -> str:
        """'loc' or 'conf' of an output name."""
        kind, _ = self.split(name)
        if kind not in self.groups:
            raise KeyError(f"head output {name!r} has no loc/conf group; known: {sorted(self.groups)}")
        return self.groups[kind]

    def confidence_sources(self, names) -> dict[str, str]:
        """For every output name, the conf output predicted at the same site (same CenterHead task, same
        anchor level, the RoI head's scores): the source of its foreground weights (METHOD §2 extension)."""
        sites: dict[str, list[str]] = {}
        for name in names:
            sites.setdefault(self.split(name)[1], []).append(name)
        sources = {}
        for site, members in sites.items():
            conf = [n for n in members if self.group(n) == "conf"]
            if len(conf) != 1:
                raise ValueError(f"head outputs at site {site!r} ({sorted(members)}): expected exactly one conf output")
            sources.update({n: conf[0] for n in members})
        return sources


def register_head(name: str):
    """Class decorator: register a :class:`HeadExtractor` under ``name`` for its ``head_types`` (a taken
    name, or a head class another extractor already reads, is refused)."""

    def deco(cls):
        if not cls.head_types:
            raise ValueError(f"head extractor {name!r}: head_types is empty, expected the mmdet3d head class names")
        taken = {t: _BY_HEAD_CLASS[t] for t in cls.head_types if t in _BY_HEAD_CLASS}
        if taken:
            raise ValueError(f"head extractor {name!r}: head classes {sorted(taken)} are already read by "
                             f"{sorted({c.name for c in taken.values()})}")
        cls.name = name
        HEADS.add(name, cls)
        _BY_HEAD_CLASS.update({t: cls for t in cls.head_types})
        return cls

    return deco


def head_extractor(model: nn.Module) -> HeadExtractor:
    """The extractor of ``model``'s head (module docstring); TypeError naming the heads and the registry."""
    found = {attr: _BY_HEAD_CLASS[type(child).__name__] for attr, child in model.named_children()
             if type(child).__name__ in _BY_HEAD_CLASS}
    used = {u for cls in found.values() for u in cls.uses}
    found = {attr: cls for attr, cls in found.items() if attr not in used}
    if len(found) != 1:
        heads = {attr: type(child).__name__ for attr, child in model.named_children() if attr.endswith("head")}
        registered = ", ".join(f"{n} ({'/'.join(c.head_types)})" for n, c in HEADS.items())
        what = "no registered head" if not found else f"several registered heads {sorted(found)}"
        raise TypeError(f"{type(model).__name__} has {what} among its heads {heads}; registered head "
                        f"extractors: {registered}")
    (attr, cls), = found.items()
    return cls(attr)


def detector_features(model: nn.Module, inputs: Mapping, data_samples):
    """The features a detector hands its head: the point-cloud branch of mmdet3d's MVX detectors
    (CenterPoint, SSN: their mode='tensor' is a stub in mmdet3d 1.4), else ``extract_feat``."""
    if hasattr(model, "extract_pts_feat"):
        metas = [s.metainfo for s in data_samples] if data_samples is not None else None
        return model.extract_feat(inputs, metas)[1]
    return model.extract_feat(inputs)


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, Mapping):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def head_outputs(model: nn.Module, inputs: Mapping, data_samples=None) -> dict[str, torch.Tensor]:
    """Dense pre-NMS head outputs of ``model`` for preprocessed ``inputs`` (``data_preprocessor`` output).

    ``inputs`` are cloned first: mmdet3d's PillarFeatureNet (legacy mode, the default) writes into the
    voxel tensor it is given, so a second forward on the same batch would see corrupted points.
    """
    return head_extractor(model).outputs(model, _clone(inputs), data_samples)
