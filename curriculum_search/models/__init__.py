"""Detector zoo: specs, the arch registry, uniform outputs, weights and checkpoints."""

from __future__ import annotations

from curriculum_search.models._registry import list_archs, register_arch
from curriculum_search.models.checkpoint import (
    load_checkpoint,
    load_detector_weights,
    save_checkpoint,
    save_detector,
)
from curriculum_search.models.detector import Detection, Detector, DetOutput, RoiOutput, Target
from curriculum_search.models.factory import build_detector, load_detector, torchvision_class_names
from curriculum_search.models.spec import DetectorSpec

__all__ = [
    "DetOutput",
    "Detection",
    "Detector",
    "DetectorSpec",
    "RoiOutput",
    "Target",
    "build_detector",
    "list_archs",
    "load_checkpoint",
    "load_detector",
    "load_detector_weights",
    "register_arch",
    "save_checkpoint",
    "save_detector",
    "torchvision_class_names",
]
