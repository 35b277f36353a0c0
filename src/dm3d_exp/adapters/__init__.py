"""Adapters between the framework-free core and concrete layers / detectors (mmdet3d, spconv)."""
