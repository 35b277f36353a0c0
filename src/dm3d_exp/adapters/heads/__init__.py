"""Head extractors, one module per head family (registry and lookup: :mod:`.base`).

A new head family is one module here that subclasses :class:`HeadExtractor`, decorates it with
:func:`register_head` and is imported below, plus its test on a tiny model.
"""
from . import anchor, center, pv_rcnn, shape_aware  # noqa: F401  (register the shipped head families)
from .base import HEADS, HeadExtractor, detector_features, head_extractor, head_outputs, register_head

__all__ = ["HEADS", "HeadExtractor", "detector_features", "head_extractor", "head_outputs", "register_head"]
