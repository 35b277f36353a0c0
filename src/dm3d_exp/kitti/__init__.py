"""KITTI object-detection format: file I/O (`format`) and the official-devkit-equivalent evaluator (`eval`)."""
