"""Pseudo-label distillation: filter teacher detections, map class sets, fuse teachers (NMS/WBF)."""

from __future__ import annotations

# Importing the fuser modules registers them.
from curriculum_search.distill.pseudo import nms as nms
from curriculum_search.distill.pseudo import wbf as wbf
from curriculum_search.distill.pseudo._registry import fuse, list_fusers, register_fuser
from curriculum_search.distill.pseudo.labels import (
    check_coverage,
    class_mapping,
    filter_detections,
    map_labels,
    merge_with_ground_truth,
    pseudo_targets,
)

__all__ = [
    "check_coverage",
    "class_mapping",
    "filter_detections",
    "fuse",
    "list_fusers",
    "map_labels",
    "merge_with_ground_truth",
    "pseudo_targets",
    "register_fuser",
]
