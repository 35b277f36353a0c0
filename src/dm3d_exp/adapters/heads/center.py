"""CenterHead (CenterPoint): per task a heatmap (conf) and reg / height / dim / rot / vel (loc), each
[B, C, H, W]; outputs named ``task<t>.<kind>``."""
from __future__ import annotations

from .base import HeadExtractor, register_head


@register_head("center")
class CenterHeadExtractor(HeadExtractor):
    head_types = ("CenterHead", "CenterHeadNoVelocity")  # the latter: the project's (mmdet3d_modules), same forward
    groups = {"heatmap": "conf", "hm": "conf", "reg": "loc", "center": "loc", "height": "loc",
              "center_z": "loc", "dim": "loc", "rot": "loc", "vel": "loc"}

    def name_outputs(self, raw):
        result = {}
        for task, task_out in enumerate(raw):
            preds = task_out[0] if isinstance(task_out, (list, tuple)) else task_out
            for key, t in preds.items():
                result[f"task{task}.{key}"] = t
        return result

    def split(self, name):
        site, _, kind = name.partition(".")
        return kind, site
