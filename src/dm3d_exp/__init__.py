"""dm3d-exp: DM3D layer-adaptive pruning experiments for LiDAR 3D detectors."""
__version__ = "0.1.0"
